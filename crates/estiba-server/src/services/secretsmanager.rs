//! AWS Secrets Manager (signing name `secretsmanager`, AWS JSON 1.1, target prefix
//! `secretsmanager`): CreateSecret, GetSecretValue, PutSecretValue, UpdateSecret,
//! DeleteSecret (recovery window or forced), RestoreSecret, DescribeSecret, ListSecrets,
//! ListSecretVersionIds and tags, over the documents of `estiba_core::secretsmanager` (one per
//! secret, with its versions). Every value is sealed with the server's secrets key
//! ([`crate::sealing`]) before it is written.
//!
//! [`resolve_secret`] reads a secret for a task's container secrets and registry credentials.
//!
//! May not: write a secret value unsealed, or answer a value anywhere but GetSecretValue.

use bytes::Bytes;
use estiba_api::schema::{Model, Protocol};
use estiba_api::secretsmanager::*;
use estiba_api::{ApiError, Blob, DecodeError};
use estiba_core::secretsmanager::{self as core, SecretDoc, SecretRef, SecretVersion};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::view::{Doc, State, TableDef};
use crate::Server;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub struct SecretsManager;

static TABLES: [TableDef; 1] = [TableDef::of::<SecretDoc>(core::PREFIX, core::SECRETS)];

fn table() -> &'static TableDef {
    &TABLES[0]
}

impl Service for SecretsManager {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&SecretsManager, other.name());
            route! { &SecretsManager, s, &cx, Operation::ALL[op], input, missing;
                CreateSecret => create_secret,
                GetSecretValue => get_secret_value,
                PutSecretValue => put_secret_value,
                UpdateSecret => update_secret,
                DeleteSecret => delete_secret,
                RestoreSecret => restore_secret,
                DescribeSecret => describe_secret,
                ListSecrets => list_secrets,
                ListSecretVersionIds => list_secret_version_ids,
                TagResource => tag_resource,
                UntagResource => untag_resource,
            }
        })
    }

    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::InvalidParameterException)
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

/// The secret `id` names (name, partial or full ARN) that is not gone as of `now`.
fn find<'a>(st: &'a State, scope: &Scope, id: &str, now: f64) -> Result<&'a Doc<SecretDoc>> {
    let d = match core::parse_ref(scope, id) {
        SecretRef::Name(name) => st.doc::<SecretDoc>(table(), &core::secret_key(scope, &name)),
        SecretRef::Arn { name, arn } => {
            // A name may itself end in `-` and six characters: then the whole is a partial ARN.
            let full = st.doc::<SecretDoc>(table(), &core::secret_key(scope, &name)).filter(|d| d.value.arn == arn);
            full.or_else(|| {
                let whole = arn.rsplit_once(":secret:").map(|(_, n)| n).unwrap_or_default();
                st.doc::<SecretDoc>(table(), &core::secret_key(scope, whole))
            })
        }
        SecretRef::Elsewhere => None,
    };
    d.filter(|d| !d.value.gone(now)).ok_or_else(core::secret_not_found)
}

fn put_doc(key: &str, d: &SecretDoc) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(d).expect("documents always serialize"))
}

fn seal_context(arn: &str, version_id: &str) -> String {
    format!("{arn}#{version_id}")
}

fn internal(e: crate::sealing::SealError) -> ApiError {
    ApiError::new(ErrorCode::InternalServiceError, e.to_string())
}

/// The value given as SecretString or SecretBinary, and whether it is binary.
fn given_value(string: &Option<String>, binary: &Option<Blob>) -> Result<Option<(Vec<u8>, bool)>> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(core::invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(s), None) => Ok(Some((s.as_bytes().to_vec(), false))),
        (None, Some(b)) => Ok(Some((b.0.clone(), true))),
        (None, None) => Ok(None),
    }
}

fn check_token(token: &Option<String>) -> Result<()> {
    if let Some(t) = token {
        if !(32..=64).contains(&t.len()) {
            return Err(core::invalid_parameter("ClientRequestToken must be between 32 and 64 characters long."));
        }
    }
    Ok(())
}

fn new_version(
    s: &Server,
    arn: &str,
    id: String,
    value: &[u8],
    binary: bool,
    stages: Vec<String>,
    now: f64,
) -> Result<SecretVersion> {
    let sealed = s.secrets_key.seal(&seal_context(arn, &id), value).map_err(internal)?;
    Ok(SecretVersion { id, stages, created: now, value: sealed, binary })
}

/// Adds a version to `doc` unless the request token names an existing one: then the same
/// value is a no-op and another one an error. Returns the version id and its stages.
fn add_value(
    s: &Server,
    doc: &mut SecretDoc,
    token: Option<&str>,
    value: &[u8],
    binary: bool,
    stages: Option<Vec<String>>,
    now: f64,
) -> Result<(String, Vec<String>, bool)> {
    if let Some(existing) = token.and_then(|t| doc.versions.iter().find(|v| v.id == t)) {
        let old = s.secrets_key.open(&seal_context(&doc.arn, &existing.id), &existing.value).map_err(internal)?;
        if old == value && existing.binary == binary {
            return Ok((existing.id.clone(), existing.stages.clone(), false));
        }
        return Err(ApiError::new(
            ErrorCode::ResourceExistsException,
            "You can't modify an existing version, you can only create a new version.",
        ));
    }
    let id = token.map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let stages = stages.unwrap_or_else(|| vec![core::CURRENT.into()]);
    let v = new_version(s, &doc.arn, id.clone(), value, binary, stages.clone(), now)?;
    doc.add_version(v);
    Ok((id, stages, true))
}

pub async fn create_secret(s: &Server, cx: &Call, req: CreateSecretRequest) -> Result<Bytes> {
    core::check_name(&req.name)?;
    check_token(&req.client_request_token)?;
    let value = given_value(&req.secret_string, &req.secret_binary)?;
    let tags = core::merge_tags(&[], req.tags.as_deref().unwrap_or_default())?;
    let scope = &cx.scope;
    let key = core::secret_key(scope, &req.name);
    let (arn, version) = s
        .transact::<_, ApiError>(|st| {
            let guard = match st.doc::<SecretDoc>(table(), &key) {
                Some(d) if d.value.gone(cx.now) => Compare::mod_revision(&key, d.rev),
                Some(d) if d.value.deletion_date.is_some() => return Err(core::invalid_request(
                    "You can't create this secret because a secret with this name is already scheduled for deletion.",
                )),
                Some(_) => return Err(core::exists(&req.name)),
                None => Compare::absent(&key),
            };
            let mut random = [0u8; 6];
            random.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..6]);
            let arn = core::arn(scope, &req.name, &core::arn_suffix(&random));
            let mut doc = SecretDoc {
                arn: arn.clone(),
                name: req.name.clone(),
                description: req.description.clone(),
                kms_key_id: req.kms_key_id.clone(),
                created: cx.now,
                last_changed: cx.now,
                deletion_date: None,
                tags: tags.clone(),
                versions: vec![],
            };
            let version = match &value {
                Some((v, binary)) => {
                    Some(add_value(s, &mut doc, req.client_request_token.as_deref(), v, *binary, None, cx.now)?.0)
                }
                None => None,
            };
            Ok((Txn::new().when(guard).then(put_doc(&key, &doc)), (arn, version)))
        })
        .await?;
    Ok(json(&CreateSecretResponse {
        arn: Some(arn),
        name: Some(req.name),
        replication_status: Some(vec![]),
        version_id: version,
    }))
}

pub async fn get_secret_value(s: &Server, cx: &Call, req: GetSecretValueRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = &find(&st, &cx.scope, &req.secret_id, cx.now)?.value;
    d.check_not_deleted()?;
    let v = d.select(req.version_id.as_deref(), req.version_stage.as_deref())?;
    let plain = s.secrets_key.open(&seal_context(&d.arn, &v.id), &v.value).map_err(internal)?;
    let (secret_string, secret_binary) = if v.binary {
        (None, Some(Blob(plain)))
    } else {
        (Some(String::from_utf8(plain).map_err(|_| core::invalid_request("The secret value is not text."))?), None)
    };
    Ok(json(&GetSecretValueResponse {
        arn: Some(d.arn.clone()),
        created_date: Some(v.created),
        name: Some(d.name.clone()),
        secret_binary,
        secret_string,
        version_id: Some(v.id.clone()),
        version_stages: Some(v.stages.clone()),
    }))
}

/// What a task's container secret or registry credentials read from a secret.
pub struct Resolved {
    pub arn: String,
    pub value: String,
}

/// Reads a secret's value for a task: the version `version_id` / `stage` select (default
/// AWSCURRENT), as text. `Err` carries the message of GetSecretValue's error.
pub fn resolve_secret(
    s: &Server,
    scope: &Scope,
    secret_id: &str,
    version_id: Option<&str>,
    stage: Option<&str>,
    now: f64,
) -> Result<Resolved> {
    let st = s.view.read();
    let d = &find(&st, scope, secret_id, now)?.value;
    d.check_not_deleted()?;
    let v = d.select(version_id, stage)?;
    let plain = s.secrets_key.open(&seal_context(&d.arn, &v.id), &v.value).map_err(internal)?;
    Ok(Resolved { arn: d.arn.clone(), value: String::from_utf8_lossy(&plain).into_owned() })
}

pub async fn put_secret_value(s: &Server, cx: &Call, req: PutSecretValueRequest) -> Result<Bytes> {
    check_token(&req.client_request_token)?;
    let Some((value, binary)) = given_value(&req.secret_string, &req.secret_binary)? else {
        return Err(core::invalid_request("You must provide either SecretString or SecretBinary."));
    };
    if req.version_stages.as_ref().is_some_and(|v| v.is_empty() || v.len() > 20) {
        return Err(core::invalid_parameter("VersionStages must hold between 1 and 20 staging labels."));
    }
    let scope = &cx.scope;
    let (arn, name, id, stages) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &req.secret_id, cx.now)?;
            d.value.check_not_deleted()?;
            let mut doc = d.value.clone();
            let (id, stages, changed) = add_value(
                s,
                &mut doc,
                req.client_request_token.as_deref(),
                &value,
                binary,
                req.version_stages.clone(),
                cx.now,
            )?;
            let txn = if changed {
                Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc))
            } else {
                Txn::new()
            };
            Ok((txn, (doc.arn.clone(), doc.name.clone(), id, stages)))
        })
        .await?;
    Ok(json(&PutSecretValueResponse {
        arn: Some(arn),
        name: Some(name),
        version_id: Some(id),
        version_stages: Some(stages),
    }))
}

pub async fn update_secret(s: &Server, cx: &Call, req: UpdateSecretRequest) -> Result<Bytes> {
    check_token(&req.client_request_token)?;
    let value = given_value(&req.secret_string, &req.secret_binary)?;
    let scope = &cx.scope;
    let (arn, name, id) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &req.secret_id, cx.now)?;
            d.value.check_not_deleted()?;
            let mut doc = d.value.clone();
            if let Some(desc) = &req.description {
                doc.description = Some(desc.clone());
            }
            if let Some(k) = &req.kms_key_id {
                doc.kms_key_id = Some(k.clone());
            }
            doc.last_changed = cx.now;
            let id = match &value {
                Some((v, binary)) => {
                    Some(add_value(s, &mut doc, req.client_request_token.as_deref(), v, *binary, None, cx.now)?.0)
                }
                None => None,
            };
            let txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc));
            Ok((txn, (doc.arn.clone(), doc.name.clone(), id)))
        })
        .await?;
    Ok(json(&UpdateSecretResponse { arn: Some(arn), name: Some(name), version_id: id }))
}

pub async fn delete_secret(s: &Server, cx: &Call, req: DeleteSecretRequest) -> Result<Bytes> {
    let window = core::recovery_window(req.recovery_window_in_days, req.force_delete_without_recovery)?;
    let scope = &cx.scope;
    let (arn, name, date) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &req.secret_id, cx.now)?;
            let guard = Compare::mod_revision(&d.key, d.rev);
            match window {
                None => Ok((
                    Txn::new().when(guard).then(Op::delete(d.key.clone())),
                    (d.value.arn.clone(), d.value.name.clone(), cx.now),
                )),
                Some(days) => {
                    d.value.check_not_deleted()?;
                    let mut doc = d.value.clone();
                    let date = (cx.now + days as f64 * 86_400.0).round();
                    doc.deletion_date = Some(date);
                    Ok((Txn::new().when(guard).then(put_doc(&d.key, &doc)), (doc.arn.clone(), doc.name.clone(), date)))
                }
            }
        })
        .await?;
    Ok(json(&DeleteSecretResponse { arn: Some(arn), deletion_date: Some(date), name: Some(name) }))
}

pub async fn restore_secret(s: &Server, cx: &Call, req: RestoreSecretRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let (arn, name) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &req.secret_id, cx.now)?;
            let mut doc = d.value.clone();
            doc.deletion_date = None;
            let txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc));
            Ok((txn, (doc.arn.clone(), doc.name.clone())))
        })
        .await?;
    Ok(json(&RestoreSecretResponse { arn: Some(arn), name: Some(name) }))
}

pub async fn describe_secret(s: &Server, cx: &Call, req: DescribeSecretRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = &find(&st, &cx.scope, &req.secret_id, cx.now)?.value;
    Ok(json(&DescribeSecretResponse {
        arn: Some(d.arn.clone()),
        created_date: Some(d.created),
        deleted_date: d.deletion_date,
        description: d.description.clone(),
        kms_key_id: d.kms_key_id.clone(),
        last_changed_date: Some(d.last_changed),
        name: Some(d.name.clone()),
        rotation_enabled: Some(false),
        tags: Some(d.tags.clone()),
        version_ids_to_stages: Some(d.stages()),
        ..Default::default()
    }))
}

fn list_entry(d: &SecretDoc) -> SecretListEntry {
    SecretListEntry {
        arn: Some(d.arn.clone()),
        created_date: Some(d.created),
        deleted_date: d.deletion_date,
        description: d.description.clone(),
        kms_key_id: d.kms_key_id.clone(),
        last_changed_date: Some(d.last_changed),
        name: Some(d.name.clone()),
        rotation_enabled: Some(false),
        secret_versions_to_stages: Some(d.stages()),
        tags: Some(d.tags.clone()),
        ..Default::default()
    }
}

/// ListSecrets' filters: each value matches by prefix (a leading `!` negates); values of
/// one filter are OR-ed, filters AND-ed.
fn filter_matches(f: &Filter, d: &SecretDoc) -> Result<bool> {
    let values = f.values.as_deref().unwrap_or_default();
    let key = f.key.ok_or_else(|| core::invalid_parameter("A filter needs a Key."))?;
    let fields: Vec<&str> = match key {
        FilterNameStringType::Name => vec![d.name.as_str()],
        FilterNameStringType::Description => d.description.as_deref().into_iter().collect(),
        FilterNameStringType::TagKey => d.tags.iter().filter_map(|t| t.key.as_deref()).collect(),
        FilterNameStringType::TagValue => d.tags.iter().filter_map(|t| t.value.as_deref()).collect(),
        FilterNameStringType::All => {
            let mut v = vec![d.name.as_str()];
            v.extend(d.description.as_deref());
            v.extend(d.tags.iter().filter_map(|t| t.key.as_deref()));
            v.extend(d.tags.iter().filter_map(|t| t.value.as_deref()));
            v
        }
        other => return Err(core::invalid_parameter(format!("estiba does not filter secrets by {}.", other.as_str()))),
    };
    Ok(values.iter().any(|v| match v.strip_prefix('!') {
        Some(neg) => !fields.iter().any(|f| f.starts_with(neg)),
        None => fields.iter().any(|f| f.starts_with(v.as_str())),
    }))
}

pub async fn list_secrets(s: &Server, cx: &Call, req: ListSecretsRequest) -> Result<Bytes> {
    let include_deleted = req.include_planned_deletion.unwrap_or(false);
    let max = req.max_results.unwrap_or(100);
    if !(1..=100).contains(&max) {
        return Err(core::invalid_parameter("MaxResults must be between 1 and 100."));
    }
    let filters = req.filters.clone().unwrap_or_default();
    let st = s.view.read();
    let mut docs = Vec::new();
    for d in st.docs::<SecretDoc>(table(), &core::secrets_prefix(&cx.scope)) {
        let d = &d.value;
        if d.gone(cx.now) || (d.deletion_date.is_some() && !include_deleted) {
            continue;
        }
        let mut keep = true;
        for f in &filters {
            keep &= filter_matches(f, d)?;
        }
        if keep {
            docs.push(d);
        }
    }
    match req.sort_by.unwrap_or(SortByType::CreatedDate) {
        SortByType::Name => docs.sort_by(|a, b| a.name.cmp(&b.name)),
        SortByType::LastChangedDate => docs.sort_by(|a, b| a.last_changed.total_cmp(&b.last_changed)),
        _ => docs.sort_by(|a, b| a.created.total_cmp(&b.created).then(a.name.cmp(&b.name))),
    }
    if req.sort_order != Some(SortOrderType::Asc) {
        docs.reverse();
    }
    // Tokens are positions in this order, as AWS's are opaque.
    let start = match req.next_token.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("p")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= docs.len())
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidNextTokenException, "The NextToken value is invalid."))?,
    };
    let end = (start + max as usize).min(docs.len());
    let next_token = (end < docs.len()).then(|| format!("p{end}"));
    let secret_list = docs[start..end].iter().map(|d| list_entry(d)).collect();
    Ok(json(&ListSecretsResponse { next_token, secret_list: Some(secret_list) }))
}

pub async fn list_secret_version_ids(s: &Server, cx: &Call, req: ListSecretVersionIdsRequest) -> Result<Bytes> {
    let st = s.view.read();
    let d = &find(&st, &cx.scope, &req.secret_id, cx.now)?.value;
    let include_all = req.include_deprecated.unwrap_or(false);
    let versions: Vec<&SecretVersion> =
        d.versions.iter().rev().filter(|v| include_all || !v.stages.is_empty()).collect();
    let page = estiba_core::page::paginate(
        versions,
        |v| v.id.clone(),
        req.next_token.as_deref(),
        req.max_results.unwrap_or(100).clamp(1, 100) as usize,
        false,
    );
    let page =
        page.map_err(|_| ApiError::new(ErrorCode::InvalidNextTokenException, "The NextToken value is invalid."))?;
    Ok(json(&ListSecretVersionIdsResponse {
        arn: Some(d.arn.clone()),
        name: Some(d.name.clone()),
        next_token: page.next_token,
        versions: Some(
            page.items
                .into_iter()
                .map(|v| SecretVersionsListEntry {
                    created_date: Some(v.created),
                    version_id: Some(v.id.clone()),
                    version_stages: Some(v.stages.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
    }))
}

pub async fn tag_resource(s: &Server, cx: &Call, req: TagResourceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = find(st, scope, &req.secret_id, cx.now)?;
        let mut doc = d.value.clone();
        doc.tags = core::merge_tags(&doc.tags, &req.tags)?;
        Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc)), ()))
    })
    .await?;
    Ok(Bytes::from_static(b"{}"))
}

pub async fn untag_resource(s: &Server, cx: &Call, req: UntagResourceRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = find(st, scope, &req.secret_id, cx.now)?;
        let mut doc = d.value.clone();
        doc.tags.retain(|t| !t.key.as_ref().is_some_and(|k| req.tag_keys.contains(k)));
        Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc)), ()))
    })
    .await?;
    Ok(Bytes::from_static(b"{}"))
}
