//! AWS Systems Manager Parameter Store (signing name `ssm`, AWS JSON 1.1, target prefix
//! `AmazonSSM`): PutParameter, GetParameter(s), GetParametersByPath, DeleteParameter(s),
//! DescribeParameters, LabelParameterVersion / UnlabelParameterVersion, GetParameterHistory
//! and parameter tags, over the documents of `estiba_core::ssm` (one per parameter, with its
//! versions). SecureString values are sealed with the server's secrets key
//! ([`crate::sealing`]) before they are written and opened only for `WithDecryption`.
//!
//! TerminateSession and ResumeSession answer for ECS Exec's sessions ([`crate::exec`]): the
//! Session Manager plugin sends them to the ECS endpoint it was given.
//!
//! [`resolve_parameters`] reads parameters for the secrets of a task's containers.
//!
//! May not: write a SecureString value unsealed, or answer one without `WithDecryption`.

use bytes::Bytes;
use estiba_api::schema::{Model, Protocol};
use estiba_api::ssm::*;
use estiba_api::{ApiError, DecodeError};
use estiba_core::ssm::{self as core, ParameterDoc, ParameterVersion, Selector};
use estiba_core::Scope;
use estiba_store::{Compare, Op, Txn};

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::view::{Doc, State, TableDef};
use crate::Server;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub struct Ssm;

static TABLES: [TableDef; 1] = [TableDef::of::<ParameterDoc>(core::PREFIX, core::PARAMETERS)];

fn table() -> &'static TableDef {
    &TABLES[0]
}

impl Service for Ssm {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(&'a self, s: &'a Server, cx: Call, op: usize, input: Input) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let missing = |other: Operation| super::not_implemented(&Ssm, other.name());
            route! { &Ssm, s, &cx, Operation::ALL[op], input, missing;
                PutParameter => put_parameter,
                GetParameter => get_parameter,
                GetParameters => get_parameters,
                GetParametersByPath => get_parameters_by_path,
                DeleteParameter => delete_parameter,
                DeleteParameters => delete_parameters,
                DescribeParameters => describe_parameters,
                LabelParameterVersion => label_parameter_version,
                UnlabelParameterVersion => unlabel_parameter_version,
                GetParameterHistory => get_parameter_history,
                AddTagsToResource => add_tags,
                RemoveTagsFromResource => remove_tags,
                ListTagsForResource => list_tags,
                TerminateSession => terminate_session,
                ResumeSession => resume_session,
            }
        })
    }

    /// A body that is not JSON is a `SerializationException`; a value the model refuses is a
    /// `ValidationException`, as SSM answers.
    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::ValidationException)
    }

    fn tables(&self) -> &'static [TableDef] {
        &TABLES
    }
}

fn find<'a>(st: &'a State, scope: &Scope, name: &str) -> Option<&'a Doc<ParameterDoc>> {
    st.doc::<ParameterDoc>(table(), &core::parameter_key(scope, name))
}

fn put_doc(key: &str, d: &ParameterDoc) -> Op {
    Op::put(key.to_owned(), serde_json::to_vec(d).expect("documents always serialize"))
}

fn seal_context(key: &str, version: i64) -> String {
    format!("{key}#{version}")
}

/// A version's value as answered: SecureString values opened when `decrypt`, else their
/// sealed form.
fn value_of(s: &Server, scope: &Scope, name: &str, v: &ParameterVersion, decrypt: bool) -> Result<String> {
    if v.kind != ParameterType::SecureString || !decrypt {
        return Ok(v.value.clone());
    }
    let key = core::parameter_key(scope, name);
    let plain = s
        .secrets_key
        .open(&seal_context(&key, v.version), &v.value)
        .map_err(|e| ApiError::new(ErrorCode::InternalServerError, e.to_string()))?;
    String::from_utf8(plain).map_err(|_| ApiError::new(ErrorCode::InternalServerError, "a sealed value is not text"))
}

fn parameter(
    s: &Server,
    scope: &Scope,
    d: &ParameterDoc,
    sel: Option<&Selector>,
    decrypt: bool,
) -> Result<estiba_api::ssm::Parameter> {
    let v = d.select(sel)?;
    Ok(estiba_api::ssm::Parameter {
        arn: Some(core::arn(scope, &d.name)),
        data_type: Some(v.data_type.clone()),
        last_modified_date: Some(v.modified),
        name: Some(d.name.clone()),
        selector: sel.map(Selector::shown),
        source_result: None,
        r#type: Some(v.kind),
        value: Some(value_of(s, scope, &d.name, v, decrypt)?),
        version: Some(v.version),
    })
}

fn metadata(scope: &Scope, d: &ParameterDoc) -> ParameterMetadata {
    let v = d.latest();
    ParameterMetadata {
        arn: Some(core::arn(scope, &d.name)),
        allowed_pattern: v.allowed_pattern.clone(),
        data_type: Some(v.data_type.clone()),
        description: v.description.clone(),
        key_id: v.key_id.clone(),
        last_modified_date: Some(v.modified),
        last_modified_user: Some(v.user.clone()),
        name: Some(d.name.clone()),
        policies: Some(vec![]),
        tier: Some(v.tier),
        r#type: Some(v.kind),
        version: Some(v.version),
    }
}

pub async fn put_parameter(s: &Server, cx: &Call, req: PutParameterRequest) -> Result<Bytes> {
    core::check_name(&req.name)?;
    let overwrite = req.overwrite.unwrap_or(false);
    if overwrite && req.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(core::validation(
            "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.",
        ));
    }
    let data_type = req.data_type.clone().unwrap_or_else(|| "text".into());
    core::check_data_type(&data_type)?;
    let tier = match req.tier {
        None | Some(ParameterTier::IntelligentTiering) => None,
        Some(t) => Some(t),
    };
    if let Some(p) = &req.allowed_pattern {
        let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|_| {
            ApiError::new(ErrorCode::InvalidAllowedPatternException, "The allowed pattern is not valid.")
        })?;
        if !re.is_match(&req.value) {
            return Err(ApiError::new(
                ErrorCode::ParameterPatternMismatchException,
                format!("Parameter value, cannot be validated against allowedPattern: {p}"),
            ));
        }
    }
    if let Some(tags) = &req.tags {
        core::merge_tags(&[], tags)?;
    }
    let scope = &cx.scope;
    let key = core::parameter_key(scope, &req.name);
    let (version, tier) = s
        .transact::<_, ApiError>(|st| {
            let existing = find(st, scope, &req.name);
            let (mut doc, guard) = match existing {
                Some(_) if !overwrite => return Err(core::already_exists()),
                Some(d) => (d.value.clone(), Compare::mod_revision(&key, d.rev)),
                None => (
                    ParameterDoc { name: req.name.clone(), tags: req.tags.clone().unwrap_or_default(), versions: vec![] },
                    Compare::absent(&key),
                ),
            };
            let prev = doc.versions.last().cloned();
            let prev = prev.as_ref();
            let kind = match (req.r#type, prev) {
                (Some(t), _) => t,
                (None, Some(p)) => p.kind,
                (None, None) => return Err(core::validation("A parameter type is required when you create a parameter.")),
            };
            if req.key_id.is_some() && kind != ParameterType::SecureString {
                return Err(core::validation("KeyId is required for SecureString type parameter only."));
            }
            let tier = tier.or(prev.map(|p| p.tier)).unwrap_or(ParameterTier::Standard);
            core::check_value(&req.value, tier)?;
            let version = prev.map_or(1, |p| p.version + 1);
            if doc.versions.len() >= core::MAX_VERSIONS {
                let oldest = &doc.versions[0];
                if !oldest.labels.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::ParameterMaxVersionLimitExceeded,
                        format!(
                            "You attempted to create a new version of {} by calling the PutParameter API with the overwrite flag. Version {}, the oldest version, can't be deleted because it has a label associated with it. Move the label to another version of the parameter, and try again.",
                            req.name, oldest.version
                        ),
                    ));
                }
                doc.versions.remove(0);
            }
            let value = if kind == ParameterType::SecureString {
                s.secrets_key
                    .seal(&seal_context(&key, version), req.value.as_bytes())
                    .map_err(|e| ApiError::new(ErrorCode::InternalServerError, e.to_string()))?
            } else {
                req.value.clone()
            };
            let description = req.description.clone().or_else(|| prev.and_then(|p| p.description.clone()));
            let key_id = (kind == ParameterType::SecureString)
                .then(|| req.key_id.clone().unwrap_or_else(|| core::DEFAULT_KEY_ID.into()));
            doc.versions.push(ParameterVersion {
                version,
                kind,
                value,
                description,
                key_id,
                allowed_pattern: req.allowed_pattern.clone(),
                data_type: data_type.clone(),
                tier,
                labels: vec![],
                modified: cx.now,
                user: scope.root_arn(),
            });
            Ok((Txn::new().when(guard).then(put_doc(&key, &doc)), (version, tier)))
        })
        .await?;
    Ok(json(&PutParameterResult { tier: Some(tier), version: Some(version) }))
}

pub async fn get_parameter(s: &Server, cx: &Call, req: GetParameterRequest) -> Result<Bytes> {
    let (name, sel) = core::parse_ref(&cx.scope, &req.name)?;
    let st = s.view.read();
    let d = find(&st, &cx.scope, &name).ok_or_else(core::parameter_not_found)?;
    let p = parameter(s, &cx.scope, &d.value, sel.as_ref(), req.with_decryption.unwrap_or(false))?;
    Ok(json(&GetParameterResult { parameter: Some(p) }))
}

pub async fn get_parameters(s: &Server, cx: &Call, req: GetParametersRequest) -> Result<Bytes> {
    let (found, invalid) = read_parameters(s, &cx.scope, &req.names, req.with_decryption.unwrap_or(false))?;
    Ok(json(&GetParametersResult { invalid_parameters: Some(invalid), parameters: Some(found) }))
}

/// The parameters `names` name (names, ARNs, with selectors), and the names that name none.
fn read_parameters(
    s: &Server,
    scope: &Scope,
    names: &[String],
    decrypt: bool,
) -> Result<(Vec<estiba_api::ssm::Parameter>, Vec<String>)> {
    let st = s.view.read();
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for given in names {
        if invalid.contains(given)
            || found.iter().any(|p: &estiba_api::ssm::Parameter| p.name.as_deref() == Some(given))
        {
            continue;
        }
        let Ok((name, sel)) = core::parse_ref(scope, given) else {
            invalid.push(given.clone());
            continue;
        };
        match find(&st, scope, &name).map(|d| parameter(s, scope, &d.value, sel.as_ref(), decrypt)) {
            Some(Ok(p)) => found.push(p),
            Some(Err(e)) if e.code == "InternalServerError" => return Err(e),
            _ => invalid.push(given.clone()),
        }
    }
    Ok((found, invalid))
}

/// Reads parameters for a task's container secrets: each name's decrypted value, or the
/// names that name no parameter (the task then fails to start).
pub fn resolve_parameters(s: &Server, scope: &Scope, names: &[String]) -> Result<Vec<(String, String)>, Vec<String>> {
    let st = s.view.read();
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for given in names {
        let value = core::parse_ref(scope, given).ok().and_then(|(name, sel)| {
            let d = find(&st, scope, &name)?;
            let v = d.value.select(sel.as_ref()).ok()?;
            value_of(s, scope, &name, v, true).ok()
        });
        match value {
            Some(v) => out.push((given.clone(), v)),
            None => missing.push(given.clone()),
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// The parameter filters SSM's Describe and ByPath calls share: `Name` (Equals,
/// BeginsWith), `Type`, `KeyId`, `DataType`, `Tier` (Equals), `Path` (OneLevel, Recursive),
/// `Label` (ByPath), `tag:KEY`.
struct Filters(Vec<ParameterStringFilter>);

impl Filters {
    fn check(filters: Option<&Vec<ParameterStringFilter>>, by_path: bool) -> Result<Filters> {
        let filters = filters.cloned().unwrap_or_default();
        for f in &filters {
            let option = f.option.as_deref().unwrap_or("Equals");
            let keys_ok = match f.key.as_str() {
                "Type" | "KeyId" | "DataType" | "Label" if by_path => option == "Equals",
                "Name" | "Path" | "Tier" if by_path => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidFilterKey,
                        format!("The following filter key is not valid: {}. Valid filter keys include: [Type, KeyId, Label, DataType].", f.key),
                    ))
                }
                "Name" => matches!(option, "Equals" | "BeginsWith" | "Contains"),
                "Path" => matches!(option, "OneLevel" | "Recursive"),
                "Type" | "KeyId" | "DataType" | "Tier" => option == "Equals",
                k if k.starts_with("tag:") => option == "Equals",
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidFilterKey,
                        format!("The following filter key is not valid: {}.", f.key),
                    ))
                }
            };
            if !keys_ok {
                return Err(ApiError::new(
                    ErrorCode::InvalidFilterOption,
                    format!("The following filter option is not valid: {option}. Valid options include: [Equals, BeginsWith, Contains, OneLevel, Recursive]."),
                ));
            }
            if f.values.as_ref().is_none_or(|v| v.is_empty()) && !f.key.starts_with("tag:") {
                return Err(ApiError::new(
                    ErrorCode::InvalidFilterValue,
                    format!("The following filter values are missing : null for filter key {}", f.key),
                ));
            }
        }
        Ok(Filters(filters))
    }

    fn matches(&self, d: &ParameterDoc) -> bool {
        let v = d.latest();
        self.0.iter().all(|f| {
            let values = f.values.as_deref().unwrap_or_default();
            let option = f.option.as_deref().unwrap_or("Equals");
            match f.key.as_str() {
                "Name" => values.iter().any(|x| {
                    let (name, x) = (d.name.trim_start_matches('/'), x.trim_start_matches('/'));
                    match option {
                        "BeginsWith" => name.starts_with(x),
                        "Contains" => name.contains(x),
                        _ => name == x,
                    }
                }),
                "Path" => values
                    .iter()
                    .any(|p| core::check_path(p).is_ok_and(|p| core::under_path(&d.name, &p, option == "Recursive"))),
                "Type" => values.iter().any(|x| x == v.kind.as_str()),
                "KeyId" => values.iter().any(|x| v.key_id.as_deref() == Some(x)),
                "DataType" => values.contains(&v.data_type),
                "Tier" => values.iter().any(|x| x == v.tier.as_str()),
                "Label" => values.iter().any(|x| v.labels.contains(x)),
                k => {
                    let key = &k[4..];
                    d.tags.iter().any(|t| t.key == key && (values.is_empty() || values.contains(&t.value)))
                }
            }
        })
    }
}

fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    token: Option<&str>,
    max: Option<i32>,
    limit: i32,
) -> Result<estiba_core::page::Page<T>> {
    let n = max.unwrap_or(limit);
    if !(1..=limit).contains(&n) {
        return Err(core::validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {limit}"
        )));
    }
    estiba_core::page::paginate(items, key, token, n as usize, false)
        .map_err(|_| ApiError::new(ErrorCode::InvalidNextToken, "The specified token isn't valid."))
}

pub async fn get_parameters_by_path(s: &Server, cx: &Call, req: GetParametersByPathRequest) -> Result<Bytes> {
    let path = core::check_path(&req.path)?;
    let filters = Filters::check(req.parameter_filters.as_ref(), true)?;
    let recursive = req.recursive.unwrap_or(false);
    let decrypt = req.with_decryption.unwrap_or(false);
    let scope = &cx.scope;
    let st = s.view.read();
    let docs: Vec<&ParameterDoc> = st
        .docs::<ParameterDoc>(table(), &core::parameter_key(scope, &path))
        .map(|d| &d.value)
        .filter(|d| core::under_path(&d.name, &path, recursive) && filters.matches(d))
        .collect();
    let pg = page(docs, |d| d.name.clone(), req.next_token.as_deref(), req.max_results, 10)?;
    let params = pg.items.into_iter().map(|d| parameter(s, scope, d, None, decrypt)).collect::<Result<Vec<_>>>()?;
    Ok(json(&GetParametersByPathResult { next_token: pg.next_token, parameters: Some(params) }))
}

pub async fn delete_parameter(s: &Server, cx: &Call, req: DeleteParameterRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = find(st, scope, &req.name).ok_or_else(core::parameter_not_found)?;
        Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(Op::delete(d.key.clone())), ()))
    })
    .await?;
    Ok(json(&DeleteParameterResult {}))
}

pub async fn delete_parameters(s: &Server, cx: &Call, req: DeleteParametersRequest) -> Result<Bytes> {
    let scope = &cx.scope;
    let (deleted, invalid) = s
        .transact::<_, ApiError>(|st| {
            let mut txn = Txn::new();
            let (mut deleted, mut invalid) = (Vec::new(), Vec::new());
            for name in &req.names {
                if deleted.contains(name) || invalid.contains(name) {
                    continue;
                }
                match find(st, scope, name) {
                    Some(d) => {
                        txn = txn.when(Compare::mod_revision(&d.key, d.rev)).then(Op::delete(d.key.clone()));
                        deleted.push(name.clone());
                    }
                    None => invalid.push(name.clone()),
                }
            }
            Ok((txn, (deleted, invalid)))
        })
        .await?;
    Ok(json(&DeleteParametersResult { deleted_parameters: Some(deleted), invalid_parameters: Some(invalid) }))
}

pub async fn describe_parameters(s: &Server, cx: &Call, req: DescribeParametersRequest) -> Result<Bytes> {
    if req.filters.is_some() && req.parameter_filters.is_some() {
        return Err(core::validation("You can use either Filters or ParameterFilters in a single request."));
    }
    let mut filters = Filters::check(req.parameter_filters.as_ref(), false)?;
    // The older `Filters` are `ParameterFilters` with Name matched by prefix.
    for f in req.filters.iter().flatten() {
        let option = if f.key == ParametersFilterKey::Name { "BeginsWith" } else { "Equals" };
        filters.0.push(ParameterStringFilter {
            key: f.key.as_str().into(),
            option: Some(option.into()),
            values: Some(f.values.clone()),
        });
    }
    let scope = &cx.scope;
    let st = s.view.read();
    let docs: Vec<&ParameterDoc> = st
        .docs::<ParameterDoc>(table(), &core::parameters_prefix(scope))
        .map(|d| &d.value)
        .filter(|d| filters.matches(d))
        .collect();
    let pg = page(docs, |d| d.name.clone(), req.next_token.as_deref(), req.max_results, 50)?;
    let params = pg.items.into_iter().map(|d| metadata(scope, d)).collect();
    Ok(json(&DescribeParametersResult { next_token: pg.next_token, parameters: Some(params) }))
}

pub async fn get_parameter_history(s: &Server, cx: &Call, req: GetParameterHistoryRequest) -> Result<Bytes> {
    let (name, _) = core::parse_ref(&cx.scope, &req.name)?;
    let decrypt = req.with_decryption.unwrap_or(false);
    let st = s.view.read();
    let d = find(&st, &cx.scope, &name).ok_or_else(core::parameter_not_found)?;
    let versions: Vec<&ParameterVersion> = d.value.versions.iter().collect();
    let pg = page(versions, |v| format!("{:020}", v.version), req.next_token.as_deref(), req.max_results, 50)?;
    let history = pg
        .items
        .into_iter()
        .map(|v| {
            Ok(ParameterHistory {
                allowed_pattern: v.allowed_pattern.clone(),
                data_type: Some(v.data_type.clone()),
                description: v.description.clone(),
                key_id: v.key_id.clone(),
                labels: Some(v.labels.clone()),
                last_modified_date: Some(v.modified),
                last_modified_user: Some(v.user.clone()),
                name: Some(name.clone()),
                policies: Some(vec![]),
                tier: Some(v.tier),
                r#type: Some(v.kind),
                value: Some(value_of(s, &cx.scope, &name, v, decrypt)?),
                version: Some(v.version),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json(&GetParameterHistoryResult { next_token: pg.next_token, parameters: Some(history) }))
}

pub async fn label_parameter_version(s: &Server, cx: &Call, req: LabelParameterVersionRequest) -> Result<Bytes> {
    let (name, _) = core::parse_ref(&cx.scope, &req.name)?;
    let scope = &cx.scope;
    let (invalid, version) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &name).ok_or_else(core::parameter_not_found)?;
            let mut doc = d.value.clone();
            let version = req.parameter_version.unwrap_or(doc.latest().version);
            let i = doc
                .versions
                .iter()
                .position(|v| v.version == version)
                .ok_or_else(|| core::version_not_found(&name, version))?;
            let (valid, invalid): (Vec<&String>, Vec<&String>) = req.labels.iter().partition(|l| core::valid_label(l));
            for l in &valid {
                for v in &mut doc.versions {
                    v.labels.retain(|x| x != *l);
                }
                doc.versions[i].labels.push((*l).clone());
            }
            doc.versions[i].labels.dedup();
            if doc.versions[i].labels.len() > core::MAX_LABELS {
                return Err(ApiError::new(
                    ErrorCode::ParameterVersionLabelLimitExceeded,
                    "A parameter version can have maximum 10 labels.Move one or more labels to another version and try again.",
                ));
            }
            let invalid: Vec<String> = invalid.into_iter().cloned().collect();
            let txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc));
            Ok((txn, (invalid, version)))
        })
        .await?;
    Ok(json(&LabelParameterVersionResult { invalid_labels: Some(invalid), parameter_version: Some(version) }))
}

pub async fn unlabel_parameter_version(s: &Server, cx: &Call, req: UnlabelParameterVersionRequest) -> Result<Bytes> {
    let (name, _) = core::parse_ref(&cx.scope, &req.name)?;
    let scope = &cx.scope;
    let (removed, invalid) = s
        .transact::<_, ApiError>(|st| {
            let d = find(st, scope, &name).ok_or_else(core::parameter_not_found)?;
            let mut doc = d.value.clone();
            let v = doc
                .versions
                .iter_mut()
                .find(|v| v.version == req.parameter_version)
                .ok_or_else(|| core::version_not_found(&name, req.parameter_version))?;
            let (removed, invalid): (Vec<String>, Vec<String>) =
                req.labels.iter().cloned().partition(|l| v.labels.contains(l));
            v.labels.retain(|l| !removed.contains(l));
            let txn = Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc));
            Ok((txn, (removed, invalid)))
        })
        .await?;
    Ok(json(&UnlabelParameterVersionResult { invalid_labels: Some(invalid), removed_labels: Some(removed) }))
}

fn tagged_parameter(t: ResourceTypeForTagging, id: &str) -> Result<String> {
    if t != ResourceTypeForTagging::Parameter {
        return Err(ApiError::new(
            ErrorCode::InvalidResourceType,
            format!("estiba tags only parameters, not {}.", t.as_str()),
        ));
    }
    Ok(id.to_owned())
}

fn invalid_resource() -> ApiError {
    ApiError::new(ErrorCode::InvalidResourceId, "")
}

pub async fn add_tags(s: &Server, cx: &Call, req: AddTagsToResourceRequest) -> Result<Bytes> {
    let name = tagged_parameter(req.resource_type, &req.resource_id)?;
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = find(st, scope, &name).ok_or_else(invalid_resource)?;
        let mut doc = d.value.clone();
        doc.tags = core::merge_tags(&doc.tags, &req.tags)?;
        Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc)), ()))
    })
    .await?;
    Ok(json(&AddTagsToResourceResult {}))
}

pub async fn remove_tags(s: &Server, cx: &Call, req: RemoveTagsFromResourceRequest) -> Result<Bytes> {
    let name = tagged_parameter(req.resource_type, &req.resource_id)?;
    let scope = &cx.scope;
    s.transact::<_, ApiError>(|st| {
        let d = find(st, scope, &name).ok_or_else(invalid_resource)?;
        let mut doc = d.value.clone();
        doc.tags.retain(|t| !req.tag_keys.contains(&t.key));
        Ok((Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(put_doc(&d.key, &doc)), ()))
    })
    .await?;
    Ok(json(&RemoveTagsFromResourceResult {}))
}

pub async fn list_tags(s: &Server, cx: &Call, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let name = tagged_parameter(req.resource_type, &req.resource_id)?;
    let st = s.view.read();
    let d = find(&st, &cx.scope, &name).ok_or_else(invalid_resource)?;
    Ok(json(&ListTagsForResourceResult { tag_list: Some(d.value.tags.clone()) }))
}

/// Ends an ECS Exec session (SSM answers an unknown or ended session alike).
pub async fn terminate_session(s: &Server, cx: &Call, req: TerminateSessionRequest) -> Result<Bytes> {
    s.exec.terminate(&cx.scope.account, &req.session_id);
    Ok(json(&TerminateSessionResponse { session_id: Some(req.session_id) }))
}

/// A fresh token for an ECS Exec session whose data channel has not been opened yet.
pub async fn resume_session(s: &Server, cx: &Call, req: ResumeSessionRequest) -> Result<Bytes> {
    match s.exec.resume(&cx.scope.account, &req.session_id) {
        Ok((url, token)) => Ok(json(&ResumeSessionResponse {
            session_id: Some(req.session_id),
            stream_url: Some(url),
            token_value: Some(token),
        })),
        Err(e) => Err(ApiError::new(ErrorCode::DoesNotExistException, e.to_string())),
    }
}
