//! Task role credentials, as the ECS agent serves them: every container of a task with a
//! task role (`taskRoleArn` in its overrides or definition) gets
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/<id>`, and the endpoint at
//! 169.254.170.2 ([`crate::metadata`]) answers `/v2/credentials/<id>` and
//! `/v1/credentials?id=<id>` with `RoleArn`, `AccessKeyId`, `SecretAccessKey`, `Token` and
//! `Expiration`, or the agent's JSON errors (`NoIdInRequest`, `InvalidIdInRequest`,
//! `CredentialsUninitialized`).
//!
//! The id is UUID-shaped and derived from the task's ARN under a key of this node
//! (`<data-dir>/credentials-id.key`, so it survives an agent restart), so the runner needs no
//! state to name it. The credentials come from the control plane
//! ([`crate::control::ControlPlane::task_credentials`]), are cached per task and fetched again
//! when less than [`RENEW_BEFORE`] is left; the server issues them for hours, and old keys keep
//! working to their own expiry. Unlike ECS (where the id is the only protection), an id is
//! answered only to a caller from the task's own addresses (as metadata is), and only while
//! the task is assigned to this node and not STOPPED.
//!
//! May not: log secrets or tokens, or answer for a task another task's address asks about.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use estiba_core::node::TaskCredentials;
use serde_json::{json, Value};

use crate::control::{Assignment, Assignments, ControlPlane};

/// Credentials with less than this left are fetched again (SDKs refresh 15 minutes before).
pub const RENEW_BEFORE: i64 = 30 * 60;

static ID_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Reads (or creates, mode 0600) the node's id key under `data_dir`; without it, ids use a
/// key of this process.
pub fn init(data_dir: &Path) {
    let path = data_dir.join("credentials-id.key");
    let key = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b.try_into().ok(),
        _ => {
            let k = random_key();
            let _ = std::fs::create_dir_all(data_dir);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path).and_then(|mut f| std::io::Write::write_all(&mut f, &k)) {
                Ok(()) => Some(k),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "credentials id key not saved; ids change on restart");
                    Some(k)
                }
            }
        }
    };
    if let Some(k) = key {
        let _ = ID_KEY.set(k);
    }
}

fn random_key() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut k).expect("system randomness");
    k
}

/// The credentials id of a task, UUID-shaped.
pub fn id(task_arn: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ID_KEY.get_or_init(random_key));
    let tag = ring::hmac::sign(&key, task_arn.as_bytes());
    let h: String = tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The task's role, when it has one.
pub fn task_role(a: &Assignment) -> Option<&str> {
    let ov = a.task.overrides.as_ref().and_then(|o| o.task_role_arn.as_deref());
    ov.or(a.taskdef.task_role_arn.as_deref()).filter(|r| !r.is_empty())
}

/// The environment variable every container of a task with a role gets.
pub fn env(task: &estiba_api::ecs::Task, td: &estiba_api::ecs::TaskDefinition) -> Option<String> {
    let ov = task.overrides.as_ref().and_then(|o| o.task_role_arn.as_deref());
    ov.or(td.task_role_arn.as_deref()).filter(|r| !r.is_empty())?;
    Some(format!("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/{}", id(task.task_arn.as_deref()?)))
}

/// `Some(id)` when `path` is a credentials route (the id may be empty), `None` otherwise.
pub fn route(path: &str) -> Option<(u8, String)> {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    if let Some(id) = p.strip_prefix("/v2/credentials") {
        return Some((2, id.trim_start_matches('/').trim_end_matches('/').to_owned()));
    }
    if p == "/v1/credentials" || p == "/v1/credentials/" {
        let id = q.split('&').find_map(|kv| kv.strip_prefix("id=")).unwrap_or("");
        return Some((1, id.to_owned()));
    }
    None
}

fn error(v: u8, status: u16, code: &str, message: &str) -> (u16, Value) {
    (status, json!({"code": code, "message": format!("CredentialsV{v}Request: {message}"), "HTTPErrorCode": status}))
}

/// How long one fetch from the control plane may take before the caller is told to retry.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The cache of issued credentials: one slot per task key, so one task's fetch (a remote call
/// for an agent on another host) neither blocks other tasks' answers nor runs twice at once.
#[derive(Default)]
pub struct Cache {
    by_task: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<TaskCredentials>>>>>,
}

/// Answers a credentials request (`route` gave `v` and `id`) from `peer` at `now` (Unix
/// seconds); `local` is the addresses this node set up ([`crate::metadata::may_read`]).
pub async fn answer(
    cache: &Cache,
    cp: &dyn ControlPlane,
    assignments: &Assignments,
    local: &crate::TaskAddresses,
    (v, id): (u8, &str),
    peer: IpAddr,
    now: i64,
) -> (u16, Value) {
    if id.is_empty() {
        return error(v, 400, "NoIdInRequest", "No Credential ID in the request");
    }
    let live = |a: &&Arc<Assignment>| a.task.last_status.as_deref() != Some("STOPPED") && task_role(a).is_some();
    let slot = {
        let mut by_task = cache.by_task.lock().unwrap_or_else(|e| e.into_inner());
        // Tasks no longer here (or stopped) lose their credentials.
        by_task.retain(|k, _| assignments.get(k).filter(live).is_some());
        let found = assignments
            .values()
            .filter(live)
            .find(|a| a.task.task_arn.as_deref().is_some_and(|arn| self::id(arn) == id));
        let Some(a) = found.filter(|a| crate::metadata::may_read(a, local, peer)) else {
            return error(v, 400, "InvalidIdInRequest", "Credentials not found");
        };
        (a.key.clone(), by_task.entry(a.key.clone()).or_default().clone())
    };
    let (key, slot) = slot;
    let mut cached = slot.lock().await;
    let creds = match cached.clone() {
        Some(c) if c.expiration - now > RENEW_BEFORE => c,
        old => match tokio::time::timeout(FETCH_TIMEOUT, cp.task_credentials(&key)).await {
            Ok(Ok(c)) => {
                *cached = Some(c.clone());
                c
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e,
                    _ => "the control plane did not answer in time".to_owned(),
                };
                tracing::warn!(task = %key, error = %e, "task credentials not issued");
                match old.filter(|c| c.expiration > now + 60) {
                    Some(c) => c,
                    None => return error(v, 503, "CredentialsUninitialized", "Credentials uninitialized for ID"),
                }
            }
        },
    };
    drop(cached);
    let expiration = chrono::DateTime::from_timestamp(creds.expiration, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    (
        200,
        json!({
            "RoleArn": creds.role_arn,
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key,
            "Token": creds.token,
            "Expiration": expiration,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlError;
    use estiba_core::node::{TaskStateAck, TaskStateChange};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

    /// Issues numbered credentials expiring at `expires`; counts the calls.
    #[derive(Default)]
    struct Issuer {
        calls: AtomicU32,
        expires: AtomicI64,
    }

    impl ControlPlane for Issuer {
        crate::control::idle_control_plane!();
        fn submit_task_state<'a>(
            &'a self,
            _: &'a str,
            _: TaskStateChange,
        ) -> BoxFuture<'a, Result<TaskStateAck, ControlError>> {
            Box::pin(async { Err(ControlError::Gone) })
        }
        fn task_credentials<'a>(&'a self, task_key: &'a str) -> BoxFuture<'a, Result<TaskCredentials, String>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let expiration = self.expires.load(Ordering::SeqCst);
            Box::pin(async move {
                Ok(TaskCredentials {
                    role_arn: format!("arn:aws:iam::123456789012:role/{task_key}"),
                    access_key_id: format!("ASIA{n}"),
                    secret_access_key: "s".into(),
                    token: "t".into(),
                    expiration,
                })
            })
        }
    }

    fn assignment(status: &str, role: bool) -> Assignments {
        let task: estiba_api::ecs::Task = serde_json::from_value(json!({
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/abc",
            "lastStatus": status,
            "attachments": [{"type": "ElasticNetworkInterface",
                             "details": [{"name": "privateIPv4Address", "value": "10.0.1.5"}]}],
            "containers": [{"name": "web"}],
        }))
        .unwrap();
        let mut td = estiba_api::ecs::TaskDefinition::default();
        if role {
            td.task_role_arn = Some("arn:aws:iam::123456789012:role/app".into());
        }
        let a = Assignment { key: "k".into(), task, taskdef: Arc::new(td), claim: Default::default() };
        Arc::new(HashMap::from([("k".to_owned(), Arc::new(a))]))
    }

    #[tokio::test]
    async fn served_to_the_task_only_cached_and_renewed() {
        let cp = Issuer::default();
        cp.expires.store(10_000, Ordering::SeqCst);
        let cache = Cache::default();
        let local = crate::TaskAddresses::default();
        let running = assignment("RUNNING", true);
        let id = id("arn:aws:ecs:us-east-1:123456789012:task/c/abc");
        let me: IpAddr = "10.0.1.5".parse().unwrap();
        let (status, body) = answer(&cache, &cp, &running, &local, (2, &id), me, 1_000).await;
        assert_eq!(status, 200);
        assert_eq!(body["AccessKeyId"], "ASIA1");
        assert_eq!(body["RoleArn"], "arn:aws:iam::123456789012:role/k");
        assert_eq!(body["Expiration"], "1970-01-01T02:46:40Z");
        assert_eq!(body.as_object().unwrap().len(), 5);
        // Cached while more than RENEW_BEFORE is left; fetched again after.
        assert_eq!(answer(&cache, &cp, &running, &local, (1, &id), me, 2_000).await.1["AccessKeyId"], "ASIA1");
        assert_eq!(
            answer(&cache, &cp, &running, &local, (2, &id), me, 10_000 - RENEW_BEFORE).await.1["AccessKeyId"],
            "ASIA2"
        );
        // Another address, an unknown id, no id.
        let (status, body) = answer(&cache, &cp, &running, &local, (2, &id), "10.0.1.6".parse().unwrap(), 1_000).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("InvalidIdInRequest")));
        assert_eq!(answer(&cache, &cp, &running, &local, (2, "nope"), me, 1_000).await.0, 400);
        let (status, body) = answer(&cache, &cp, &running, &local, (1, ""), me, 1_000).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some("CredentialsV1Request: No Credential ID in the request"))
        );
        // A stopped task's credentials are gone, and so is a task without a role.
        let stopped = assignment("STOPPED", true);
        assert_eq!(answer(&cache, &cp, &stopped, &local, (2, &id), me, 1_000).await.0, 400);
        assert!(cache.by_task.lock().unwrap().is_empty());
        assert_eq!(answer(&cache, &cp, &assignment("RUNNING", false), &local, (2, &id), me, 1_000).await.0, 400);
        // A task whose address is not known yet gets nothing, unless it shares the host's.
        let mut pending = (*running["k"]).clone();
        pending.task.attachments = None;
        let mut host = pending.clone();
        let unaddressed = |a: Assignment| Arc::new(HashMap::from([("k".to_owned(), Arc::new(a))]));
        assert_eq!(answer(&cache, &cp, &unaddressed(pending.clone()), &local, (2, &id), me, 1_000).await.0, 400);
        // Known from the node's own setup before the control plane shows it.
        local.lock().unwrap().insert("abc".into(), "10.0.1.5".parse().unwrap());
        assert_eq!(answer(&cache, &cp, &unaddressed(pending), &local, (2, &id), me, 1_000).await.0, 200);
        assert_eq!(
            answer(&cache, &cp, &unaddressed(host.clone()), &local, (2, &id), "10.0.1.6".parse().unwrap(), 1_000)
                .await
                .0,
            400
        );
        local.lock().unwrap().clear();
        let mut td = (*host.taskdef).clone();
        td.network_mode = Some(estiba_api::ecs::NetworkMode::Host);
        host.taskdef = Arc::new(td);
        assert_eq!(answer(&cache, &cp, &unaddressed(host), &local, (2, &id), me, 1_000).await.0, 200);
        assert_eq!(
            env(&running["k"].task, &running["k"].taskdef).unwrap(),
            format!("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/{id}")
        );
        assert_eq!(env(&running["k"].task, &estiba_api::ecs::TaskDefinition::default()), None);
    }

    #[test]
    fn routes_and_ids() {
        assert_eq!(route("/v2/credentials/abc"), Some((2, "abc".into())));
        assert_eq!(route("/v2/credentials/"), Some((2, "".into())));
        assert_eq!(route("/v2/credentials"), Some((2, "".into())));
        assert_eq!(route("/v1/credentials?id=abc"), Some((1, "abc".into())));
        assert_eq!(route("/v1/credentials"), Some((1, "".into())));
        assert_eq!(route("/v4/abc-web"), None);
        let a = id("arn:aws:ecs:us-east-1:123456789012:task/c/abc");
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(a, id("arn:aws:ecs:us-east-1:123456789012:task/c/abc"));
        assert_ne!(a, id("arn:aws:ecs:us-east-1:123456789012:task/c/abd"));
        let (status, body) = error(2, 400, "InvalidIdInRequest", "Credentials not found");
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"code": "InvalidIdInRequest", "message": "CredentialsV2Request: Credentials not found", "HTTPErrorCode": 400})
        );
    }
}
