//! The task metadata endpoint (versions 4 and 3), and task role credentials
//! ([`crate::credentials`]), as the ECS agent serves them: every container
//! gets `ECS_CONTAINER_METADATA_URI_V4` (and `ECS_CONTAINER_METADATA_URI`) =
//! `http://169.254.170.2/v4/<task-id>-<container>`; the agent answers on 169.254.170.2:80, an
//! address it puts on the node's VPC bridge, which every task network reaches through its
//! default route. `${URI}` is the container, `${URI}/task` the task with its containers,
//! `${URI}/stats` and `${URI}/task/stats` Docker-stats-shaped numbers from the cgroup
//! sampler's last two samples ([`Latest`]).
//!
//! Answers come from the agent's own view of its tasks (its assignments and the addresses it
//! set up for them), nothing else. A task is answered only to a caller from one of its own
//! addresses (awsvpc, bridge), so no task reads another's metadata or credentials by guessing
//! its id; a task without one yet is answered to no one; `host` tasks share the machine's
//! addresses and are answered to any local caller. The HTTP side is deliberately small: one
//! GET per connection, `Connection: close`.
//!
//! **Architecture invariant:** read-only; it never changes a task, and answers only about
//! tasks assigned to this node.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use estiba_api::ecs::Task;
use estiba_core::task as task_rules;
use estiba_core::telemetry::MetricSample;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::control::Assignment;
use crate::Shared;

/// Where the endpoint answers.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);

/// The two URIs a container gets, for its id `<task-id>-<container>`.
pub fn env(task_id: &str, container: &str) -> [String; 2] {
    [
        format!("ECS_CONTAINER_METADATA_URI_V4=http://{ADDRESS}/v4/{task_id}-{container}"),
        format!("ECS_CONTAINER_METADATA_URI=http://{ADDRESS}/v3/{task_id}-{container}"),
    ]
}

/// One sampling of a cgroup: the sample, the host's CPU time then (ns), and the CPUs online.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub sample: MetricSample,
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
}

/// A cgroup: its task's ARN and its container (`None` for the task's own).
type CgroupKey = (String, Option<String>);

/// The sampler's last two readings of every task (`None`) and container cgroup.
#[derive(Debug, Default)]
pub struct Latest {
    by: Mutex<HashMap<CgroupKey, (Reading, Option<Reading>)>>,
}

impl Latest {
    pub fn record(&self, readings: Vec<Reading>) {
        let mut g = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let now: std::collections::HashSet<String> = readings.iter().map(|r| r.sample.task_arn.clone()).collect();
        for r in readings {
            let key = (r.sample.task_arn.clone(), r.sample.container.clone());
            let prev = g.remove(&key).map(|(cur, _)| cur);
            g.insert(key, (r, prev));
        }
        // Tasks no longer sampled are gone.
        g.retain(|(arn, _), _| now.contains(arn));
    }

    fn get(&self, arn: &str, container: Option<&str>) -> Option<(Reading, Option<Reading>)> {
        let g = self.by.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&(arn.to_owned(), container.map(str::to_owned))).cloned()
    }
}

/// The host's CPU time (the first line of `/proc/stat`), in nanoseconds, as Docker reports it.
pub fn system_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

fn rfc3339(secs: Option<f64>) -> Value {
    match secs.and_then(|s| chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64)) {
        Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

fn family_revision(arn: &str) -> (String, String) {
    let fr = arn.rsplit_once(":task-definition/").map_or(arn, |(_, f)| f);
    match fr.rsplit_once(':') {
        Some((f, r)) => (f.to_owned(), r.to_owned()),
        None => (fr.to_owned(), String::new()),
    }
}

fn without_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// A container as `${URI}` shows it.
pub fn container_json(a: &Assignment, task_id: &str, name: &str) -> Option<Value> {
    let t = &a.task;
    let c = t.containers.iter().flatten().find(|c| c.name.as_deref() == Some(name))?;
    let def = a.taskdef.container_definitions.iter().flatten().find(|d| d.name.as_deref() == Some(name));
    let (family, revision) = family_revision(t.task_definition_arn.as_deref().unwrap_or(""));
    let mode = a.taskdef.network_mode.map(|m| m.as_str().to_owned()).unwrap_or_else(|| "awsvpc".into());
    let ip = c
        .network_interfaces
        .iter()
        .flatten()
        .find_map(|n| n.private_ipv4_address.clone())
        .or_else(|| task_rules::private_ipv4(t).map(|i| i.to_string()));
    let mut networks = vec![];
    if mode != "none" {
        networks.push(without_nulls(json!({
            "NetworkMode": mode,
            "IPv4Addresses": ip.map(|i| vec![i]),
            "AttachmentIndex": 0,
        })));
    }
    let log = def.and_then(|d| d.log_configuration.as_ref());
    Some(without_nulls(json!({
        "DockerId": format!("{task_id}-{name}"),
        "Name": name,
        "DockerName": format!("ecs-{family}-{revision}-{name}"),
        "Image": c.image.clone().or_else(|| def.and_then(|d| d.image.clone())),
        "ImageID": c.image_digest,
        "Labels": {
            "com.amazonaws.ecs.cluster": t.cluster_arn,
            "com.amazonaws.ecs.container-name": name,
            "com.amazonaws.ecs.task-arn": t.task_arn,
            "com.amazonaws.ecs.task-definition-family": family,
            "com.amazonaws.ecs.task-definition-version": revision,
        },
        "DesiredStatus": t.desired_status,
        "KnownStatus": c.last_status,
        "Limits": {
            "CPU": def.map_or(0, |d| d.cpu),
            "Memory": def.and_then(|d| d.memory).unwrap_or(0),
        },
        "Type": "NORMAL",
        "ContainerARN": c.container_arn,
        "LogDriver": log.map(|l| l.log_driver.as_str()),
        "LogOptions": log.and_then(|l| l.options.clone()),
        "Networks": networks,
    })))
}

/// The task as `${URI}/task` shows it.
pub fn task_json(a: &Assignment, task_id: &str) -> Value {
    let t: &Task = &a.task;
    let (family, revision) = family_revision(t.task_definition_arn.as_deref().unwrap_or(""));
    let containers: Vec<Value> =
        t.containers.iter().flatten().filter_map(|c| container_json(a, task_id, c.name.as_deref()?)).collect();
    let cpu = t.cpu.as_deref().and_then(|c| c.parse::<f64>().ok()).map(|c| c / 1024.0);
    let memory = t.memory.as_deref().and_then(|m| m.parse::<u64>().ok());
    without_nulls(json!({
        "Cluster": t.cluster_arn,
        "TaskARN": t.task_arn,
        "Family": family,
        "Revision": revision,
        "DesiredStatus": t.desired_status,
        "KnownStatus": t.last_status,
        "Limits": without_nulls(json!({"CPU": cpu, "Memory": memory})),
        "PullStartedAt": rfc3339(t.pull_started_at),
        "PullStoppedAt": rfc3339(t.pull_stopped_at),
        "AvailabilityZone": t.availability_zone,
        "LaunchType": t.launch_type.map(|l| l.as_str().to_owned()),
        "ServiceName": t.group.as_deref().and_then(|g| g.strip_prefix("service:")),
        "Containers": containers,
    }))
}

/// Docker's stats shape for one cgroup's two last readings; network numbers from the task's.
pub fn stats_json(id: &str, name: &str, cur: &Reading, prev: Option<&Reading>, net: Option<&MetricSample>) -> Value {
    let cpu = |r: &Reading| {
        json!({
            "cpu_usage": {"total_usage": r.sample.cpu_usage_ns.unwrap_or(0)},
            "system_cpu_usage": r.system_cpu_ns,
            "online_cpus": r.online_cpus,
        })
    };
    let ts = |ms: i64| rfc3339(Some(ms as f64 / 1000.0));
    let s = &cur.sample;
    let blkio: Vec<Value> = [("Read", s.storage_read_bytes), ("Write", s.storage_write_bytes)]
        .into_iter()
        .filter_map(|(op, v)| Some(json!({"major": 0, "minor": 0, "op": op, "value": v?})))
        .collect();
    let mut out = json!({
        "read": ts(s.timestamp),
        "preread": prev.map_or(Value::String("0001-01-01T00:00:00Z".into()), |p| ts(p.sample.timestamp)),
        "name": name,
        "id": id,
        "cpu_stats": cpu(cur),
        "precpu_stats": prev.map_or(json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0}), cpu),
        "memory_stats": without_nulls(json!({"usage": s.memory_usage_bytes, "limit": s.memory_limit_bytes})),
        "blkio_stats": {"io_service_bytes_recursive": blkio},
    });
    if let Some(n) = net {
        if let (Some(rx), Some(tx)) = (n.network_rx_bytes, n.network_tx_bytes) {
            out["networks"] = json!({"eth0": {"rx_bytes": rx, "tx_bytes": tx}});
        }
    }
    out
}

/// `(version, task id, container, rest)` of a request path: `/v4/<task-id>-<container>/task`.
fn route(path: &str) -> Option<(&str, &str, &str, &str)> {
    let path = path.split('?').next().unwrap_or(path);
    let rest = path.strip_prefix('/')?;
    let (version, rest) = rest.split_once('/')?;
    if version != "v4" && version != "v3" {
        return None;
    }
    let (id, tail) = rest.split_once('/').map_or((rest, ""), |(i, t)| (i, t));
    let (task_id, container) = id.split_once('-')?;
    Some((version, task_id, container, tail.trim_end_matches('/')))
}

/// Whether `peer` may read what the node serves a task (its metadata and its role's
/// credentials): `peer` is one of the task's own addresses (the one this node set up, known
/// from the start, or one the control plane shows: its ENI's, its containers' bridge
/// addresses); a task in `host` mode shares the machine's; a task without an address gets
/// nothing.
pub(crate) fn may_read(a: &Assignment, local: &crate::TaskAddresses, peer: IpAddr) -> bool {
    if estiba_core::taskdef::network_mode(&a.taskdef) == estiba_api::ecs::NetworkMode::Host {
        return true;
    }
    let task = &a.task;
    let set_up = local.lock().unwrap_or_else(|e| e.into_inner()).get(task_rules::task_id(task)).copied();
    if set_up.is_some_and(|ip| IpAddr::V4(ip) == peer) {
        return true;
    }
    task.containers
        .iter()
        .flatten()
        .flat_map(|c| c.network_interfaces.iter().flatten())
        .filter_map(|n| n.private_ipv4_address.as_deref()?.parse::<IpAddr>().ok())
        .chain(task_rules::private_ipv4(task).map(IpAddr::V4))
        .any(|own| own == peer)
}

/// The answer to a GET of `path` from `peer`: status and JSON body. A caller that may not read
/// the task is told there is nothing there, as for an unknown id.
pub fn answer(
    assignments: &crate::control::Assignments,
    local: &crate::TaskAddresses,
    latest: &Latest,
    path: &str,
    peer: IpAddr,
) -> (u16, Value) {
    let not_found = (404, json!({"error": format!("no metadata at {path}")}));
    let Some((_, task_id, container, tail)) = route(path) else { return not_found };
    let Some(a) = assignments.values().find(|a| task_rules::task_id(&a.task) == task_id) else { return not_found };
    if !may_read(a, local, peer) {
        return not_found;
    }
    let arn = a.task.task_arn.clone().unwrap_or_default();
    let task_reading = latest.get(&arn, None);
    let container_stats = |name: &str| -> Value {
        match latest.get(&arn, Some(name)) {
            Some((cur, prev)) => stats_json(
                &format!("{task_id}-{name}"),
                name,
                &cur,
                prev.as_ref(),
                task_reading.as_ref().map(|(t, _)| &t.sample),
            ),
            None => Value::Null,
        }
    };
    match tail {
        "" => container_json(a, task_id, container).map_or(not_found, |c| (200, c)),
        "task" => (200, task_json(a, task_id)),
        "stats" => (200, container_stats(container)),
        "task/stats" => {
            let all: serde_json::Map<String, Value> = a
                .task
                .containers
                .iter()
                .flatten()
                .filter_map(|c| c.name.as_deref())
                .map(|n| (format!("{task_id}-{n}"), container_stats(n)))
                .collect();
            (200, Value::Object(all))
        }
        _ => not_found,
    }
}

/// Serves the endpoint until `shutdown` flips (not at all when the address cannot be had).
pub async fn run(shared: Arc<Shared>, latest: Arc<Latest>, mut shutdown: watch::Receiver<bool>) {
    if crate::network::add_vpc_addresses(&shared, vec![ADDRESS], "task metadata").await.is_empty() {
        return;
    }
    let listener = match tokio::net::TcpListener::bind(SocketAddr::from((ADDRESS, 80))).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the task metadata endpoint cannot listen on {ADDRESS}:80");
            return;
        }
    };
    let assignments = shared.cp.assignments();
    let credentials = Arc::new(crate::credentials::Cache::default());
    loop {
        let (mut conn, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let current = assignments.borrow().clone();
        let latest = latest.clone();
        let (shared, credentials) = (shared.clone(), credentials.clone());
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let text = String::from_utf8_lossy(&buf);
            let mut first = text.lines().next().unwrap_or("").split(' ');
            let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
            // Task role credentials answer any method, as the ECS agent's do.
            let (status, body) = if let Some((v, id)) = crate::credentials::route(path) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let local = &shared.task_addresses;
                crate::credentials::answer(&credentials, shared.cp.as_ref(), &current, local, (v, &id), peer.ip(), now)
                    .await
            } else if method == "GET" {
                answer(&current, &shared.task_addresses, &latest, path, peer.ip())
            } else {
                (405, json!({"error": "only GET"}))
            };
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let reason = match status {
                200 => "OK",
                400 => "Bad Request",
                404 => "Not Found",
                503 => "Service Unavailable",
                _ => "Method Not Allowed",
            };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&body).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_task_itself_reads_its_metadata() {
        let local = crate::TaskAddresses::default();
        let of = |task: serde_json::Value, mode: Option<estiba_api::ecs::NetworkMode>| {
            let task: Task = serde_json::from_value(task).unwrap();
            let taskdef = estiba_api::ecs::TaskDefinition { network_mode: mode, ..Default::default() };
            Assignment { key: "k".into(), task, taskdef: Arc::new(taskdef), claim: Default::default() }
        };
        let awsvpc = of(
            json!({
                "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/abc",
                "attachments": [{"type": "ElasticNetworkInterface",
                                 "details": [{"name": "privateIPv4Address", "value": "10.0.1.5"}]}],
                "containers": [{"name": "web"}],
            }),
            Some(estiba_api::ecs::NetworkMode::Awsvpc),
        );
        assert!(may_read(&awsvpc, &local, "10.0.1.5".parse().unwrap()));
        assert!(!may_read(&awsvpc, &local, "10.0.1.6".parse().unwrap()));
        let bridge = of(
            json!({
                "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/def",
                "containers": [{"name": "web", "networkInterfaces": [{"privateIpv4Address": "172.17.0.9"}]}],
            }),
            None,
        );
        assert!(may_read(&bridge, &local, "172.17.0.9".parse().unwrap()));
        assert!(!may_read(&bridge, &local, "10.0.1.5".parse().unwrap()));
        // No address shown yet: only the one this node set up reads.
        let fresh = of(
            json!({"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/ghi", "containers": [{"name": "web"}]}),
            None,
        );
        assert!(!may_read(&fresh, &local, "172.17.0.10".parse().unwrap()));
        local.lock().unwrap().insert("ghi".into(), "172.17.0.10".parse().unwrap());
        assert!(may_read(&fresh, &local, "172.17.0.10".parse().unwrap()));
        assert!(!may_read(&fresh, &local, "172.17.0.11".parse().unwrap()));
        let host = of(json!({"containers": [{"name": "web"}]}), Some(estiba_api::ecs::NetworkMode::Host));
        assert!(may_read(&host, &local, "169.254.170.2".parse().unwrap()));
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v4/abc-web"), Some(("v4", "abc", "web", "")));
        assert_eq!(route("/v4/abc-web/task/stats"), Some(("v4", "abc", "web", "task/stats")));
        assert_eq!(route("/v3/abc-my-app/stats?x=1"), Some(("v3", "abc", "my-app", "stats")));
        assert_eq!(route("/v2/abc-web"), None);
        assert_eq!(route("/"), None);
    }

    #[test]
    fn stats_have_dockers_shape() {
        let r = |ts, cpu| Reading {
            sample: MetricSample {
                task_arn: "arn".into(),
                container: Some("web".into()),
                timestamp: ts,
                cpu_usage_ns: Some(cpu),
                memory_usage_bytes: Some(10),
                memory_limit_bytes: Some(100),
                ..Default::default()
            },
            system_cpu_ns: cpu * 4,
            online_cpus: 2,
        };
        let net = MetricSample { network_rx_bytes: Some(5), network_tx_bytes: Some(6), ..Default::default() };
        let v = stats_json("t-web", "web", &r(2000, 200), Some(&r(1000, 100)), Some(&net));
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 200);
        assert_eq!(v["precpu_stats"]["system_cpu_usage"], 400);
        assert_eq!(v["cpu_stats"]["online_cpus"], 2);
        assert_eq!(v["memory_stats"], json!({"usage": 10, "limit": 100}));
        assert_eq!(v["networks"]["eth0"], json!({"rx_bytes": 5, "tx_bytes": 6}));
        assert_eq!(v["read"], "1970-01-01T00:00:02.000Z");
    }
}
