//! The ECR API (`AmazonEC2ContainerRegistry_V20150921.*`): repositories, images, tags,
//! policies and authorization tokens, over the same store and blobs as `/v2/`
//! ([`crate::registry`]). Also the registry's housekeeping: lifecycle policies and garbage
//! collection of blobs no image uses.

use std::collections::{BTreeSet, HashSet};

use bytes::Bytes;
use estiba_api::ecr::*;
use estiba_api::schema::{Model, Protocol};
use estiba_api::{ApiError, DecodeError};
use estiba_core::ecr::{self, EcrError, LifecyclePolicy, RepoDoc};
use estiba_core::Scope;
use estiba_registry::manifest::Manifest;
use estiba_registry::{names, Digest};
use estiba_store::{Compare, Op, Txn};
use serde::Serialize;

use super::{json, route, BoxFuture, Call, Input, Service};
use crate::registry::{PutError, Registry};
use crate::view::{Doc, State};
use crate::Server;

type Result<T, E = EcrError> = std::result::Result<T, E>;

/// Who is calling.
pub struct Ctx {
    pub scope: Scope,
    pub now: f64,
}

/// The ECR service.
pub struct Ecr;

impl Service for Ecr {
    fn model(&self) -> &'static Model {
        &MODEL
    }

    fn call<'a>(
        &'a self,
        s: &'a Server,
        call: Call,
        op: usize,
        input: Input,
    ) -> BoxFuture<'a, Result<Bytes, ApiError>> {
        Box::pin(async move {
            let cx = Ctx { scope: call.scope, now: call.now };
            dispatch(s, &cx, Operation::ALL[op], input).await
        })
    }

    fn decode_error(&self, e: DecodeError, _: Protocol) -> ApiError {
        super::json_decode_error(e, ErrorCode::InvalidParameterException)
    }
}

async fn dispatch(s: &Server, cx: &Ctx, op: Operation, input: Input) -> Result<Bytes, ApiError> {
    let unsupported = |other: Operation| {
        ApiError::new(
            ErrorCode::ValidationException,
            format!("estiba does not support the ECR {} operation yet.", other.name()),
        )
    };
    route! { &Ecr, s, cx, op, input, unsupported;
        CreateRepository => create_repository,
        DescribeRepositories => describe_repositories,
        DeleteRepository => delete_repository,
        PutImageTagMutability => put_image_tag_mutability,
        ListImages => list_images,
        DescribeImages => describe_images,
        BatchGetImage => batch_get_image,
        BatchDeleteImage => batch_delete_image,
        PutImage => put_image,
        BatchCheckLayerAvailability => batch_check_layer_availability,
        GetAuthorizationToken => get_authorization_token,
        SetRepositoryPolicy => set_repository_policy,
        GetRepositoryPolicy => get_repository_policy,
        DeleteRepositoryPolicy => delete_repository_policy,
        PutLifecyclePolicy => put_lifecycle_policy,
        GetLifecyclePolicy => get_lifecycle_policy,
        DeleteLifecyclePolicy => delete_lifecycle_policy,
        TagResource => tag_resource,
        UntagResource => untag_resource,
        ListTagsForResource => list_tags_for_resource,
    }
}

fn registry(s: &Server) -> Result<&Registry> {
    s.registry
        .as_deref()
        .ok_or_else(|| EcrError::new(ErrorCode::ServerException, "the registry is not enabled on this server"))
}

fn check_registry_id(cx: &Ctx, id: Option<&str>) -> Result<()> {
    match id {
        Some(id) if id != cx.scope.account => Err(EcrError::invalid(format!(
            "Invalid parameter at 'registryId' failed to satisfy constraint: 'this registry is {}; {id} is not served here'",
            cx.scope.account
        ))),
        _ => Ok(()),
    }
}

fn repo_doc<'a>(st: &'a State, cx: &Ctx, name: &str) -> Result<&'a std::sync::Arc<Doc<RepoDoc>>> {
    st.ecr_repos.get(&ecr::repo_key(&cx.scope, name)).ok_or_else(|| EcrError::repository_not_found(&cx.scope, name))
}

fn put_doc<T: Serialize>(key: &str, v: &T) -> Op {
    Op::put(key, Bytes::from(serde_json::to_vec(v).expect("documents serialize")))
}

fn tags_to_store(tags: &[Tag]) -> Vec<estiba_api::ecs::Tag> {
    tags.iter().map(|t| estiba_api::ecs::Tag { key: Some(t.key.clone()), value: Some(t.value.clone()) }).collect()
}

fn tags_from_store(tags: &[estiba_api::ecs::Tag]) -> Vec<Tag> {
    tags.iter()
        .map(|t| Tag { key: t.key.clone().unwrap_or_default(), value: t.value.clone().unwrap_or_default() })
        .collect()
}

fn check_tags(tags: &[Tag]) -> Result<()> {
    let mut keys = BTreeSet::new();
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 || t.key.starts_with("aws:") {
            return Err(EcrError::new(
                ErrorCode::InvalidTagParameterException,
                format!(
                    "Invalid tag {:?}: keys are 1 to 128 characters and may not start with 'aws:', values up to 256",
                    t.key
                ),
            ));
        }
        keys.insert(t.key.as_str());
    }
    if keys.len() > 50 {
        return Err(EcrError::new(ErrorCode::TooManyTagsException, "A resource can have at most 50 tags."));
    }
    Ok(())
}

fn check_repository_name(name: &str) -> Result<()> {
    names::check_repository(name).map_err(|e| {
        EcrError::invalid(format!(
            "Invalid parameter at 'repositoryName' failed to satisfy constraint: '{}'",
            e.message
        ))
    })
}

async fn create_repository(s: &Server, cx: &Ctx, req: CreateRepositoryRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    check_repository_name(&req.repository_name)?;
    let tags = req.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    let reg = registry(s)?;
    let name = req.repository_name.clone();
    let key = ecr::repo_key(&cx.scope, &name);
    let repository = Repository {
        repository_arn: Some(ecr::repository_arn(&cx.scope, &name)),
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(name.clone()),
        repository_uri: Some(format!("{}/{name}", reg.host)),
        created_at: Some(cx.now),
        image_tag_mutability: Some(req.image_tag_mutability.unwrap_or(ImageTagMutability::Mutable)),
        image_tag_mutability_exclusion_filters: req.image_tag_mutability_exclusion_filters.clone(),
        image_scanning_configuration: Some(
            req.image_scanning_configuration.clone().unwrap_or(ImageScanningConfiguration { scan_on_push: false }),
        ),
        encryption_configuration: Some(
            req.encryption_configuration
                .clone()
                .unwrap_or(EncryptionConfiguration { encryption_type: EncryptionType::Aes256, kms_key: None }),
        ),
    };
    let doc = RepoDoc {
        repository: repository.clone(),
        policy_text: None,
        lifecycle_policy_text: None,
        lifecycle_evaluated_at: None,
    };
    let txn = Txn::new()
        .when(Compare::absent(&key))
        .then(put_doc(&key, &doc))
        .then(put_doc(&estiba_core::keys::tags_of(&key), &tags_to_store(&tags)));
    if !s.commit(txn).await? {
        return Err(EcrError::new(
            ErrorCode::RepositoryAlreadyExistsException,
            format!("The repository with name '{name}' already exists in the registry with id '{}'", cx.scope.account),
        ));
    }
    Ok(json(&CreateRepositoryResponse { repository: Some(repository) }))
}

async fn describe_repositories(s: &Server, cx: &Ctx, req: DescribeRepositoriesRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let st = s.view.read();
    if let Some(names) = &req.repository_names {
        if req.next_token.is_some() || req.max_results != 0 {
            return Err(EcrError::invalid("nextToken and maxResults cannot be used with repositoryNames."));
        }
        let mut out = Vec::new();
        for n in names {
            out.push(repo_doc(&st, cx, n)?.value.repository.clone());
        }
        return Ok(json(&DescribeRepositoriesResponse { repositories: Some(out), next_token: None }));
    }
    let limit = estiba_core::page::limit(Some(req.max_results), 100, 1000).map_err(|e| EcrError::invalid(e.message))?;
    let prefix = ecr::repos_prefix(&cx.scope);
    let page = estiba_core::page::paginate(
        State::range(&st.ecr_repos, &prefix),
        |d| d.key.clone(),
        req.next_token.as_deref(),
        limit,
        false,
    )
    .map_err(|e| EcrError::invalid(e.message))?;
    Ok(json(&DescribeRepositoriesResponse {
        repositories: Some(page.items.iter().map(|d| d.value.repository.clone()).collect()),
        next_token: page.next_token,
    }))
}

async fn delete_repository(s: &Server, cx: &Ctx, req: DeleteRepositoryRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let name = req.repository_name.clone();
    let force = req.force;
    // AWS's force delete is not atomic either: when the repository's tags, images and blob
    // links do not fit one transaction with it, they go first, in batches guarded by the
    // repository's revision (tags before their images, so no tag ever names a missing image).
    // A crash in between leaves the repository with fewer images; the retry finishes.
    s.trim_children(|st| {
        let doc = repo_doc(st, cx, &name).ok()?;
        let images: Vec<String> =
            State::range(&st.ecr_images, &ecr::images_of(&cx.scope, &name)).map(|d| d.key.clone()).collect();
        if !images.is_empty() && !force {
            return None;
        }
        let mut children: Vec<String> =
            State::range(&st.ecr_tags, &ecr::tags_of_repo(&cx.scope, &name)).map(|d| d.key.clone()).collect();
        children.extend(images);
        children.extend(State::range(&st.ecr_blobs, &ecr::blobs_of(&cx.scope, &name)).map(|d| d.key.clone()));
        Some((vec![Compare::mod_revision(&doc.key, doc.rev)], 2, children))
    })
    .await?;
    let repository = s.transact::<_, EcrError>(|st| {
        let doc = repo_doc(st, cx, &name)?;
        let images: Vec<&String> = State::range(&st.ecr_images, &ecr::images_of(&cx.scope, &name)).map(|d| &d.key).collect();
        if !images.is_empty() && !force {
            return Err(EcrError::new(
                ErrorCode::RepositoryNotEmptyException,
                format!(
                    "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                    cx.scope.account
                ),
            ));
        }
        let mut txn = Txn::new().when(Compare::mod_revision(&doc.key, doc.rev)).then(Op::delete(&doc.key));
        txn.ops.push(Op::delete(estiba_core::keys::tags_of(&doc.key)));
        for k in images {
            txn.ops.push(Op::delete(k));
        }
        for d in State::range(&st.ecr_tags, &ecr::tags_of_repo(&cx.scope, &name)) {
            txn.ops.push(Op::delete(&d.key));
        }
        for d in State::range(&st.ecr_blobs, &ecr::blobs_of(&cx.scope, &name)) {
            txn.ops.push(Op::delete(&d.key));
        }
        Ok((txn, doc.value.repository.clone()))
    })
    .await?;
    Ok(json(&DeleteRepositoryResponse { repository: Some(repository) }))
}

async fn put_image_tag_mutability(s: &Server, cx: &Ctx, req: PutImageTagMutabilityRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let with_exclusions = matches!(
        req.image_tag_mutability,
        ImageTagMutability::ImmutableWithExclusion | ImageTagMutability::MutableWithExclusion
    );
    let filters = req.image_tag_mutability_exclusion_filters.clone().filter(|f| !f.is_empty());
    if with_exclusions != filters.is_some() {
        return Err(EcrError::invalid(
            "imageTagMutabilityExclusionFilters are required with IMMUTABLE_WITH_EXCLUSION and MUTABLE_WITH_EXCLUSION, and not allowed otherwise.",
        ));
    }
    s.transact::<_, EcrError>(|st| {
        let doc = repo_doc(st, cx, &req.repository_name)?;
        let mut v = doc.value.clone();
        v.repository.image_tag_mutability = Some(req.image_tag_mutability);
        v.repository.image_tag_mutability_exclusion_filters = filters.clone();
        Ok((Txn::new().when(Compare::mod_revision(&doc.key, doc.rev)).then(put_doc(&doc.key, &v)), ()))
    })
    .await?;
    Ok(json(&PutImageTagMutabilityResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        image_tag_mutability: Some(req.image_tag_mutability),
        image_tag_mutability_exclusion_filters: filters,
    }))
}

/// Images of a repository as (digest, tags, document), in key order.
fn images<'a>(st: &'a State, cx: &Ctx, name: &str) -> Vec<(&'a ecr::ImageDoc, Vec<String>)> {
    State::range(&st.ecr_images, &ecr::images_of(&cx.scope, name))
        .map(|d| (&d.value, st.image_tags(&d.key).cloned().collect()))
        .collect()
}

fn tag_status_ok(filter: Option<&TagStatus>, tagged: bool) -> bool {
    match filter {
        Some(TagStatus::Tagged) => tagged,
        Some(TagStatus::Untagged) => !tagged,
        _ => true,
    }
}

async fn list_images(s: &Server, cx: &Ctx, req: ListImagesRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let st = s.view.read();
    repo_doc(&st, cx, &req.repository_name)?;
    let filter = req.filter.as_ref().and_then(|f| f.tag_status.as_ref());
    let mut ids: Vec<(String, ImageIdentifier)> = Vec::new();
    for (img, tags) in images(&st, cx, &req.repository_name) {
        if !tag_status_ok(filter, !tags.is_empty()) {
            continue;
        }
        if tags.is_empty() {
            ids.push((img.digest.clone(), ImageIdentifier { image_digest: Some(img.digest.clone()), image_tag: None }));
        }
        for t in tags {
            ids.push((
                format!("{}:{t}", img.digest),
                ImageIdentifier { image_digest: Some(img.digest.clone()), image_tag: Some(t) },
            ));
        }
    }
    let limit = estiba_core::page::limit(Some(req.max_results), 100, 1000).map_err(|e| EcrError::invalid(e.message))?;
    let page = estiba_core::page::paginate(ids, |(k, _)| k.clone(), req.next_token.as_deref(), limit, false)
        .map_err(|e| EcrError::invalid(e.message))?;
    Ok(json(&ListImagesResponse {
        image_ids: Some(page.items.into_iter().map(|(_, id)| id).collect()),
        next_token: page.next_token,
    }))
}

/// Finds the image an identifier names: by digest, by tag, or both (which must agree).
fn find_image<'a>(
    st: &'a State,
    cx: &Ctx,
    name: &str,
    id: &ImageIdentifier,
) -> std::result::Result<&'a ecr::ImageDoc, (ImageFailureCode, String)> {
    let by_tag = match &id.image_tag {
        Some(t) => {
            let Some(d) = st.ecr_tags.get(&ecr::tag_key(&cx.scope, name, t)) else {
                return Err((ImageFailureCode::ImageNotFound, "Requested image not found".into()));
            };
            Some(d.value.digest.clone())
        }
        None => None,
    };
    let digest = match (&id.image_digest, by_tag) {
        (None, None) => {
            return Err((
                ImageFailureCode::MissingDigestAndTag,
                "Invalid request parameters: both tag and digest cannot be null".into(),
            ))
        }
        (Some(d), Some(t)) if *d != t => {
            return Err((
                ImageFailureCode::ImageTagDoesNotMatchDigest,
                "Invalid request parameters: image tag and digest do not match".into(),
            ))
        }
        (Some(d), _) => {
            if Digest::parse(d).is_err() {
                return Err((
                    ImageFailureCode::InvalidImageDigest,
                    format!("Invalid request parameters: image digest '{d}' is not valid"),
                ));
            }
            d.clone()
        }
        (None, Some(t)) => t,
    };
    st.ecr_images
        .get(&ecr::image_key(&cx.scope, name, &digest))
        .map(|d| &d.value)
        .ok_or((ImageFailureCode::ImageNotFound, "Requested image not found".into()))
}

fn image_id_text(id: &ImageIdentifier) -> String {
    format!(
        "{{imageDigest:'{}', imageTag:'{}'}}",
        id.image_digest.as_deref().unwrap_or("null"),
        id.image_tag.as_deref().unwrap_or("null")
    )
}

fn detail(cx: &Ctx, name: &str, img: &ecr::ImageDoc, tags: Vec<String>) -> ImageDetail {
    ImageDetail {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(name.to_owned()),
        image_digest: Some(img.digest.clone()),
        image_tags: (!tags.is_empty()).then_some(tags),
        image_size_in_bytes: img.size,
        image_pushed_at: Some(img.pushed_at),
        image_manifest_media_type: Some(img.media_type.clone()),
        artifact_media_type: Some(img.artifact_type.clone().unwrap_or_else(|| {
            if img.manifests.is_empty() && img.media_type.contains("docker") {
                "application/vnd.docker.container.image.v1+json".into()
            } else if img.manifests.is_empty() {
                "application/vnd.oci.image.config.v1+json".into()
            } else {
                img.media_type.clone()
            }
        })),
        subject_manifest_digest: img.subject.clone(),
        image_status: Some(ImageStatus::Active),
        ..Default::default()
    }
}

async fn describe_images(s: &Server, cx: &Ctx, req: DescribeImagesRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let st = s.view.read();
    let name = &req.repository_name;
    repo_doc(&st, cx, name)?;
    if let Some(ids) = &req.image_ids {
        let mut out = Vec::new();
        for id in ids {
            let img = find_image(&st, cx, name, id).map_err(|(code, _)| match code {
                ImageFailureCode::ImageNotFound | ImageFailureCode::ImageTagDoesNotMatchDigest => EcrError::new(
                    ErrorCode::ImageNotFoundException,
                    format!(
                        "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{}'",
                        image_id_text(id),
                        cx.scope.account
                    ),
                ),
                _ => EcrError::invalid(format!("Invalid image identifier {}", image_id_text(id))),
            })?;
            let tags = st.image_tags(&ecr::image_key(&cx.scope, name, &img.digest)).cloned().collect();
            out.push(detail(cx, name, img, tags));
        }
        return Ok(json(&DescribeImagesResponse { image_details: Some(out), next_token: None }));
    }
    let filter = req.filter.as_ref().and_then(|f| f.tag_status.as_ref());
    let all: Vec<ImageDetail> = images(&st, cx, name)
        .into_iter()
        .filter(|(_, tags)| tag_status_ok(filter, !tags.is_empty()))
        .map(|(img, tags)| detail(cx, name, img, tags))
        .collect();
    let limit = estiba_core::page::limit(Some(req.max_results), 100, 1000).map_err(|e| EcrError::invalid(e.message))?;
    let page = estiba_core::page::paginate(
        all,
        |d| d.image_digest.clone().unwrap_or_default(),
        req.next_token.as_deref(),
        limit,
        false,
    )
    .map_err(|e| EcrError::invalid(e.message))?;
    Ok(json(&DescribeImagesResponse { image_details: Some(page.items), next_token: page.next_token }))
}

async fn batch_get_image(s: &Server, cx: &Ctx, req: BatchGetImageRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let reg = registry(s)?;
    let found: Vec<std::result::Result<(ImageIdentifier, String, String), ImageFailure>> = {
        let st = s.view.read();
        repo_doc(&st, cx, &req.repository_name)?;
        req.image_ids
            .iter()
            .map(|id| match find_image(&st, cx, &req.repository_name, id) {
                Ok(img) => Ok((id.clone(), img.digest.clone(), img.media_type.clone())),
                Err((code, reason)) => Err(ImageFailure {
                    image_id: Some(id.clone()),
                    failure_code: Some(code),
                    failure_reason: Some(reason),
                }),
            })
            .collect()
    };
    let (mut images, mut failures) = (Vec::new(), Vec::new());
    for f in found {
        match f {
            Ok((id, digest, media_type)) => {
                if let Some(accepted) = req.accepted_media_types.as_ref().filter(|a| !a.is_empty()) {
                    if !accepted.contains(&media_type) {
                        failures.push(ImageFailure {
                            image_id: Some(id),
                            failure_code: Some(ImageFailureCode::ImageNotFound),
                            failure_reason: Some(format!(
                                "The image is {media_type}, which is not among the accepted media types"
                            )),
                        });
                        continue;
                    }
                }
                let d = Digest::parse(&digest).map_err(|e| EcrError::new(ErrorCode::ServerException, e.message))?;
                // Pushed through another server sharing the state: its bytes come from there.
                crate::registry::local_copy(s, reg, &d)
                    .await
                    .map_err(|e| EcrError::new(ErrorCode::ServerException, e.message))?;
                let body = reg.blobs.read(&d).map_err(|e| EcrError::new(ErrorCode::ServerException, e.message))?;
                images.push(Image {
                    registry_id: Some(cx.scope.account.clone()),
                    repository_name: Some(req.repository_name.clone()),
                    image_id: Some(ImageIdentifier { image_digest: Some(digest), image_tag: id.image_tag.clone() }),
                    image_manifest: Some(String::from_utf8_lossy(&body).into_owned()),
                    image_manifest_media_type: Some(media_type),
                });
            }
            Err(f) => failures.push(f),
        }
    }
    Ok(json(&BatchGetImageResponse { images: Some(images), failures: Some(failures) }))
}

/// BatchDeleteImage's write for `ids`: the transaction and the answer's entries. `gone` holds
/// the tags and images already deleted by this call (earlier ids, earlier batches).
fn plan_batch_delete(
    st: &State,
    cx: &Ctx,
    name: &str,
    ids: &[ImageIdentifier],
    gone: &mut HashSet<String>,
) -> Result<(Txn, Vec<ImageIdentifier>, Vec<ImageFailure>)> {
    let repo = repo_doc(st, cx, name)?;
    let mut txn = Txn::new().when(Compare::mod_revision(&repo.key, repo.rev));
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for id in ids {
        let img = match find_image(st, cx, name, id) {
            Ok(i) => i,
            Err((code, reason)) => {
                failures.push(ImageFailure {
                    image_id: Some(id.clone()),
                    failure_code: Some(code),
                    failure_reason: Some(reason),
                });
                continue;
            }
        };
        let ik = ecr::image_key(&cx.scope, name, &img.digest);
        let tags: Vec<String> = st.image_tags(&ik).cloned().collect();
        // By tag: remove the tag; the image goes with its last tag.
        let remaining: Vec<&String> = match &id.image_tag {
            Some(t) if id.image_digest.is_none() => {
                tags.iter().filter(|x| *x != t && !gone.contains(&format!("{ik}:{x}"))).collect()
            }
            _ => Vec::new(),
        };
        let drop_tags: Vec<&String> = match &id.image_tag {
            Some(t) if id.image_digest.is_none() => vec![t],
            _ => tags.iter().collect(),
        };
        for t in drop_tags {
            if gone.insert(format!("{ik}:{t}")) {
                txn.ops.push(Op::delete(ecr::tag_key(&cx.scope, name, t)));
            }
        }
        if remaining.is_empty() && gone.insert(ik.clone()) {
            if let Some(parent) = st.ecr_images.get(&ik).and_then(|_| {
                crate::registry::indexes_using(st, &cx.scope, name, &Digest::parse(&img.digest).ok()?).next()
            }) {
                failures.push(ImageFailure {
                    image_id: Some(id.clone()),
                    failure_code: Some(ImageFailureCode::ImageReferencedByManifestList),
                    failure_reason: Some(format!("Requested image is referenced by manifest list {parent}")),
                });
                continue;
            }
            txn.ops.push(Op::delete(&ik));
        }
        deleted.push(ImageIdentifier { image_digest: Some(img.digest.clone()), image_tag: id.image_tag.clone() });
    }
    Ok((txn, deleted, failures))
}

async fn batch_delete_image(s: &Server, cx: &Ctx, req: BatchDeleteImageRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let name = req.repository_name.clone();
    // AWS answers image by image (some deleted, some failed), so the ids may go in several
    // transactions: as many at a time as fit the store's limits (up to 100 ids, each image
    // with its tags, may not), each guarded by the repository's revision.
    let limits = s.txn_limits();
    let (mut deleted, mut failures) = (Vec::new(), Vec::new());
    let mut gone: HashSet<String> = HashSet::new();
    let mut done = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while done < req.image_ids.len() || done == 0 {
        let mut n = req.image_ids.len() - done;
        let (txn, d, f, g) = loop {
            let st = s.view.read();
            let mut g = gone.clone();
            let (txn, d, f) = plan_batch_delete(&st, cx, &name, &req.image_ids[done..done + n], &mut g)?;
            if n <= 1 || limits.fits(&txn) {
                break (txn, d, f, g);
            }
            n = n.div_ceil(2);
        };
        if s.commit(txn).await? {
            deleted.extend(d);
            failures.extend(f);
            gone = g;
            done += n.max(1);
        } else if std::time::Instant::now() > deadline {
            return Err(crate::WriteError::Conflicts.into());
        } else {
            s.catch_up().await;
        }
    }
    Ok(json(&BatchDeleteImageResponse { image_ids: Some(deleted), failures: Some(failures) }))
}

async fn put_image(s: &Server, cx: &Ctx, req: PutImageRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let reg = registry(s)?;
    let name = req.repository_name.clone();
    {
        let st = s.view.read();
        repo_doc(&st, cx, &name)?;
    }
    if let Some(t) = &req.image_tag {
        names::check_tag(t).map_err(|e| EcrError::invalid(e.message))?;
    }
    let body = req.image_manifest.as_bytes();
    let m = Manifest::parse(body, req.image_manifest_media_type.as_deref()).map_err(|e| {
        EcrError::invalid(format!("Invalid parameter at 'imageManifest' failed to satisfy constraint: '{}'", e.message))
    })?;
    let d = Digest::of(body);
    if let Some(given) = &req.image_digest {
        if given != d.as_str() {
            return Err(EcrError::new(
                ErrorCode::ImageDigestDoesNotMatchException,
                format!("The digest {given} does not match the manifest's digest {d}"),
            ));
        }
    }
    let image_id = ImageIdentifier { image_digest: Some(d.to_string()), image_tag: req.image_tag.clone() };
    {
        let st = s.view.read();
        let exists = st.ecr_images.contains_key(&ecr::image_key(&cx.scope, &name, d.as_str()));
        let tag_same = match &req.image_tag {
            Some(t) => {
                st.ecr_tags.get(&ecr::tag_key(&cx.scope, &name, t)).is_some_and(|x| x.value.digest == d.as_str())
            }
            None => true,
        };
        if exists && tag_same {
            return Err(EcrError::new(
                ErrorCode::ImageAlreadyExistsException,
                format!(
                    "Image with digest '{d}' and tag '{}' already exists in the repository with name '{name}' in registry with id '{}'",
                    req.image_tag.as_deref().unwrap_or("null"),
                    cx.scope.account
                ),
            ));
        }
        crate::registry::check_manifest(&st, &cx.scope, &name, &m, &d, body.len(), cx.now).map_err(|e| {
            EcrError::new(
                ErrorCode::LayersNotFoundException,
                format!("The image references blobs that are not in the repository: {}", e.message),
            )
        })?;
    }
    let _g = reg.gc_lock.read().await;
    let stored = {
        let blobs = reg.blobs.clone();
        let body = body.to_vec();
        tokio::task::spawn_blocking(move || blobs.put(&body)).await.expect("put panicked")
    };
    stored.map_err(|e| EcrError::new(ErrorCode::ServerException, e.message))?;
    match crate::registry::store_image(s, &cx.scope, &name, &m, &d, body.len(), req.image_tag.as_deref()).await {
        Ok(_) => {}
        Err(PutError::TagImmutable(t)) => {
            return Err(EcrError::new(
                ErrorCode::ImageTagAlreadyExistsException,
                format!("The image tag '{t}' already exists in the '{name}' repository and cannot be overwritten because the repository is immutable."),
            ))
        }
        Err(PutError::Registry(e)) => return Err(EcrError::new(ErrorCode::LayersNotFoundException, e.message)),
    }
    Ok(json(&PutImageResponse {
        image: Some(Image {
            registry_id: Some(cx.scope.account.clone()),
            repository_name: Some(name),
            image_id: Some(image_id),
            image_manifest: Some(req.image_manifest.clone()),
            image_manifest_media_type: Some(m.media_type.clone()),
        }),
    }))
}

async fn batch_check_layer_availability(
    s: &Server,
    cx: &Ctx,
    req: BatchCheckLayerAvailabilityRequest,
) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let reg = registry(s)?;
    let st = s.view.read();
    repo_doc(&st, cx, &req.repository_name)?;
    let (mut layers, mut failures) = (Vec::new(), Vec::new());
    let shared = s.peers.shared();
    for digest in &req.layer_digests {
        let linked = st.ecr_blobs.get(&ecr::blob_key(&cx.scope, &req.repository_name, digest));
        // A link's size when the bytes are on another server sharing the state.
        let local = Digest::parse(digest).ok().and_then(|d| reg.blobs.stat(&d)).map(|n| n as i64);
        let size = linked.and_then(|l| local.or(Some(l.value.size).filter(|n| *n > 0 && shared)));
        match (linked, size) {
            (Some(_), Some(size)) => layers.push(Layer {
                layer_digest: Some(digest.clone()),
                layer_availability: Some(LayerAvailability::Available),
                layer_size: size,
                media_type: None,
            }),
            _ => failures.push(LayerFailure {
                layer_digest: Some(digest.clone()),
                failure_code: Some(LayerFailureCode::MissingLayerDigest),
                failure_reason: Some("Layer is not in the repository".into()),
            }),
        }
    }
    Ok(json(&BatchCheckLayerAvailabilityResponse { layers: Some(layers), failures: Some(failures) }))
}

/// Tokens are good for 12 hours, as ECR's.
const TOKEN_LIFETIME: u64 = 12 * 3600;

async fn get_authorization_token(s: &Server, cx: &Ctx, req: GetAuthorizationTokenRequest) -> Result<Bytes> {
    let reg = registry(s)?;
    for id in req.registry_ids.iter().flatten() {
        check_registry_id(cx, Some(id))?;
    }
    let expires = cx.now as u64 + TOKEN_LIFETIME;
    let token = ecr::token::encode(&reg.password(&cx.scope, expires));
    Ok(json(&GetAuthorizationTokenResponse {
        authorization_data: Some(vec![AuthorizationData {
            authorization_token: Some(token),
            expires_at: Some(expires as f64),
            proxy_endpoint: Some(format!("http://{}", reg.host)),
        }]),
    }))
}

/// Updates a repository's document with `f`.
async fn update_repo(
    s: &Server,
    cx: &Ctx,
    name: &str,
    mut f: impl FnMut(&mut RepoDoc) -> Result<()>,
) -> Result<RepoDoc> {
    s.transact::<_, EcrError>(|st| {
        let doc = repo_doc(st, cx, name)?;
        let mut v = doc.value.clone();
        f(&mut v)?;
        Ok((Txn::new().when(Compare::mod_revision(&doc.key, doc.rev)).then(put_doc(&doc.key, &v)), v))
    })
    .await
}

fn policy_not_found(cx: &Ctx, name: &str) -> EcrError {
    EcrError::new(
        ErrorCode::RepositoryPolicyNotFoundException,
        format!(
            "Repository policy does not exist for the repository with name '{name}' in the registry with id '{}'",
            cx.scope.account
        ),
    )
}

async fn set_repository_policy(s: &Server, cx: &Ctx, req: SetRepositoryPolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let ok = serde_json::from_str::<serde_json::Value>(&req.policy_text)
        .ok()
        .is_some_and(|v| v.get("Statement").is_some_and(|s| s.is_array() || s.is_object()));
    if !ok {
        return Err(EcrError::invalid(
            "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'",
        ));
    }
    let text = req.policy_text.clone();
    update_repo(s, cx, &req.repository_name, |r| {
        r.policy_text = Some(text.clone());
        Ok(())
    })
    .await?;
    Ok(json(&SetRepositoryPolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        policy_text: Some(req.policy_text),
    }))
}

async fn get_repository_policy(s: &Server, cx: &Ctx, req: GetRepositoryPolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let st = s.view.read();
    let doc = repo_doc(&st, cx, &req.repository_name)?;
    let text = doc.value.policy_text.clone().ok_or_else(|| policy_not_found(cx, &req.repository_name))?;
    Ok(json(&GetRepositoryPolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        policy_text: Some(text),
    }))
}

async fn delete_repository_policy(s: &Server, cx: &Ctx, req: DeleteRepositoryPolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let mut old = None;
    update_repo(s, cx, &req.repository_name, |r| {
        old = Some(r.policy_text.take().ok_or_else(|| policy_not_found(cx, &req.repository_name))?);
        Ok(())
    })
    .await?;
    Ok(json(&DeleteRepositoryPolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        policy_text: old,
    }))
}

fn lifecycle_not_found(cx: &Ctx, name: &str) -> EcrError {
    EcrError::new(
        ErrorCode::LifecyclePolicyNotFoundException,
        format!(
            "Lifecycle policy does not exist for the repository with name '{name}' in the registry with id '{}'",
            cx.scope.account
        ),
    )
}

async fn put_lifecycle_policy(s: &Server, cx: &Ctx, req: PutLifecyclePolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    LifecyclePolicy::parse(&req.lifecycle_policy_text)?;
    let text = req.lifecycle_policy_text.clone();
    update_repo(s, cx, &req.repository_name, |r| {
        r.lifecycle_policy_text = Some(text.clone());
        r.lifecycle_evaluated_at = None;
        Ok(())
    })
    .await?;
    Ok(json(&PutLifecyclePolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        lifecycle_policy_text: Some(req.lifecycle_policy_text),
    }))
}

async fn get_lifecycle_policy(s: &Server, cx: &Ctx, req: GetLifecyclePolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let st = s.view.read();
    let doc = repo_doc(&st, cx, &req.repository_name)?;
    let text = doc.value.lifecycle_policy_text.clone().ok_or_else(|| lifecycle_not_found(cx, &req.repository_name))?;
    Ok(json(&GetLifecyclePolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        lifecycle_policy_text: Some(text),
        last_evaluated_at: doc.value.lifecycle_evaluated_at,
    }))
}

async fn delete_lifecycle_policy(s: &Server, cx: &Ctx, req: DeleteLifecyclePolicyRequest) -> Result<Bytes> {
    check_registry_id(cx, req.registry_id.as_deref())?;
    let mut old = None;
    let doc = update_repo(s, cx, &req.repository_name, |r| {
        old = Some(r.lifecycle_policy_text.take().ok_or_else(|| lifecycle_not_found(cx, &req.repository_name))?);
        Ok(())
    })
    .await?;
    Ok(json(&DeleteLifecyclePolicyResponse {
        registry_id: Some(cx.scope.account.clone()),
        repository_name: Some(req.repository_name),
        lifecycle_policy_text: old,
        last_evaluated_at: doc.lifecycle_evaluated_at,
    }))
}

/// The repository key an ECR ARN names in the caller's scope.
fn repo_of_arn(cx: &Ctx, arn: &str) -> Result<String> {
    let prefix = format!("arn:aws:ecr:{}:{}:repository/", cx.scope.region, cx.scope.account);
    let name = arn.strip_prefix(&prefix).ok_or_else(|| {
        EcrError::invalid(format!("Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN {arn}; expected {prefix}<name>'"))
    })?;
    Ok(name.to_owned())
}

/// Changes a repository's resource tags with `f`, then checks them.
async fn update_tags(s: &Server, cx: &Ctx, arn: &str, f: impl Fn(&mut Vec<Tag>)) -> Result<()> {
    let name = repo_of_arn(cx, arn)?;
    s.transact::<_, EcrError>(|st| {
        let doc = repo_doc(st, cx, &name)?;
        let tk = estiba_core::keys::tags_of(&doc.key);
        let mut tags = st.tags_of(&doc.key).map(tags_from_store).unwrap_or_default();
        f(&mut tags);
        check_tags(&tags)?;
        let rev = st.tags.get(&tk).map_or(0, |d| d.rev);
        let txn = Txn::new()
            .when(Compare::mod_revision(&doc.key, doc.rev))
            .when(Compare::mod_revision(&tk, rev))
            .then(put_doc(&tk, &tags_to_store(&tags)));
        Ok((txn, ()))
    })
    .await
}

async fn tag_resource(s: &Server, cx: &Ctx, req: TagResourceRequest) -> Result<Bytes> {
    update_tags(s, cx, &req.resource_arn, |tags| {
        for t in &req.tags {
            tags.retain(|x| x.key != t.key);
            tags.push(t.clone());
        }
    })
    .await?;
    Ok(json(&TagResourceResponse {}))
}

async fn untag_resource(s: &Server, cx: &Ctx, req: UntagResourceRequest) -> Result<Bytes> {
    update_tags(s, cx, &req.resource_arn, |tags| tags.retain(|t| !req.tag_keys.contains(&t.key))).await?;
    Ok(json(&UntagResourceResponse {}))
}

async fn list_tags_for_resource(s: &Server, cx: &Ctx, req: ListTagsForResourceRequest) -> Result<Bytes> {
    let name = repo_of_arn(cx, &req.resource_arn)?;
    let st = s.view.read();
    let doc = repo_doc(&st, cx, &name)?;
    let tags = st.tags_of(&doc.key).map(tags_from_store).unwrap_or_default();
    Ok(json(&ListTagsForResourceResponse { tags: Some(tags) }))
}

/// Applies lifecycle policies, then removes blobs that no image and no recent push uses.
/// Lifecycle expiries go in one transaction within the server's background budget, each image
/// with its tags; returns whether some were left for the next pass (which the caller makes
/// soon). Blob links go in as many transactions as it takes, all before any file is removed.
pub async fn housekeeping(s: &Server) -> Result<bool> {
    let Some(reg) = s.registry.as_deref() else { return Ok(false) };
    let now = crate::now();
    // 1. Lifecycle policies.
    let txn = {
        let st = s.view.read();
        let mut txn = estiba_store::BoundedTxn::new(s.txn_budget());
        for doc in st.ecr_repos.values() {
            if txn.left_over() {
                break;
            }
            let Some(text) = &doc.value.lifecycle_policy_text else { continue };
            let Ok(policy) = LifecyclePolicy::parse(text) else { continue };
            let name = doc.value.repository.repository_name.as_deref().unwrap_or_default();
            let images_prefix = ecr::rekind(&doc.key, "ecr-images") + "@";
            let tags_prefix = ecr::rekind(&doc.key, "ecr-tags") + ":";
            let imgs: Vec<(&str, f64, Vec<&str>)> = State::range(&st.ecr_images, &images_prefix)
                .map(|d| {
                    let tags = st.image_tags(&d.key).map(String::as_str).collect();
                    (d.value.digest.as_str(), d.value.pushed_at, tags)
                })
                .collect();
            let expired = policy.expired(&imgs, now);
            // `lastEvaluatedAt` moves when something expired, and at most hourly otherwise, so
            // an idle registry does not rewrite its repositories every pass.
            if expired.is_empty() && doc.value.lifecycle_evaluated_at.is_some_and(|t| now - t < 3600.0) {
                continue;
            }
            let mut v = doc.value.clone();
            v.lifecycle_evaluated_at = Some(now);
            if !txn.add(Txn::new().when(Compare::mod_revision(&doc.key, doc.rev)).then(put_doc(&doc.key, &v))) {
                break;
            }
            // The expired images that fit; the policy finds the others again next pass.
            for digest in expired {
                let ik = format!("{images_prefix}{digest}");
                let mut g = Txn::new();
                if let Some(d) = st.ecr_images.get(&ik) {
                    g.compares.push(Compare::mod_revision(&ik, d.rev));
                }
                g.ops.push(Op::delete(&ik));
                for t in st.image_tags(&ik) {
                    g.ops.push(Op::delete(format!("{tags_prefix}{t}")));
                }
                if !txn.add(g) {
                    break;
                }
                tracing::info!(repository = name, digest, "lifecycle policy expired an image");
            }
        }
        txn
    };
    let left_over = txn.left_over();
    let txn = txn.into_txn();
    if !txn.ops.is_empty() {
        s.commit(txn).await?;
    }
    // 2. Blob links older than the grace period that no image of their repository uses.
    let grace = s.config.registry_gc_grace.as_secs_f64();
    let _exclusive = reg.gc_lock.write().await;
    let (links, used) = {
        let st = s.view.read();
        let mut used: HashSet<String> = HashSet::new();
        let mut used_in_repo: HashSet<(String, &str)> = HashSet::new();
        for d in st.ecr_images.values() {
            let repo = ecr::rekind(d.key.rsplit_once('@').map_or("", |(r, _)| r), "ecr-blobs");
            used.insert(d.value.digest.clone());
            for b in &d.value.blobs {
                used.insert(b.clone());
                used_in_repo.insert((repo.clone(), b.as_str()));
            }
        }
        let mut links = Vec::new();
        for d in st.ecr_blobs.values() {
            let (repo, digest) = d.key.rsplit_once('@').unwrap_or_default();
            if now - d.value.pushed_at > grace && !used_in_repo.contains(&(repo.to_owned(), digest)) {
                links.push(Txn::new().when(Compare::mod_revision(&d.key, d.rev)).then(Op::delete(&d.key)));
            } else {
                used.insert(digest.to_owned());
            }
        }
        (links, used)
    };
    // Every link goes (in as many transactions as the budget needs) before any file does: a
    // file is removed only when no link to it is left.
    for (txn, _) in estiba_store::pack(s.txn_budget(), links) {
        if !s.commit(txn).await? {
            // A push touched a link meanwhile; try again next time.
            return Ok(left_over);
        }
    }
    // 3. Blob files used by nothing, older than the grace period.
    remove_unused_files(reg, used, grace).await;
    Ok(left_over)
}

/// Removes the blob files of this server's disk that nothing in `used` names and that are older
/// than `grace` seconds; returns the bytes freed.
async fn remove_unused_files(reg: &Registry, used: HashSet<String>, grace: f64) -> u64 {
    let blobs = reg.blobs.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0u64;
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs_f64(grace);
        for (d, size, mtime) in blobs.list().unwrap_or_default() {
            if !used.contains(d.as_str()) && mtime <= cutoff && blobs.delete(&d).unwrap_or(false) {
                removed += size;
            }
        }
        removed
    })
    .await
    .unwrap_or(0);
    if removed > 0 {
        tracing::info!(bytes = removed, "registry garbage collected");
    }
    removed
}

/// A follower's part of garbage collection (the leader collects links and its own files):
/// its copies of blobs that no image and no link names any more, once older than the grace
/// period, go from its disk.
pub async fn sweep_follower_copies(s: &Server) -> u64 {
    let Some(reg) = s.registry.as_deref() else { return 0 };
    let used: HashSet<String> = {
        let st = s.view.read();
        let mut used: HashSet<String> = HashSet::new();
        for d in st.ecr_images.values() {
            used.insert(d.value.digest.clone());
            used.extend(d.value.blobs.iter().cloned());
        }
        for d in st.ecr_blobs.values() {
            used.insert(d.key.rsplit_once('@').map_or("", |(_, digest)| digest).to_owned());
        }
        used
    };
    let _exclusive = reg.gc_lock.write().await;
    remove_unused_files(reg, used, s.config.registry_gc_grace.as_secs_f64()).await
}
