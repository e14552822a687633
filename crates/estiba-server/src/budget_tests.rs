//! Writers within the store's transaction limits: a server on a [`MemStore`] that refuses
//! transactions over 16 operations (as etcd with `--max-txn-ops 16` does) runs the operations
//! and controllers that write many keys, and everything they should do gets done.

use std::sync::Arc;
use std::time::Duration;

use estiba_store::{MemStore, TxnLimits};
use serde_json::{json, Value};

use crate::controller::housekeeping::{housekeeping, Housekeeping};
use crate::scaling::tests::call;
use crate::Server;

const LIMIT: usize = 16;

async fn limited_server() -> Arc<Server> {
    let store = MemStore::with_limits(TxnLimits { max_ops: LIMIT, ..TxnLimits::NONE });
    let s = Server::new(crate::Config::default(), Arc::new(store)).await.expect("server");
    assert_eq!(s.txn_limits().max_ops, LIMIT);
    assert_eq!(s.txn_budget().max_ops, LIMIT);
    call(&s, "ecs", "CreateCluster", json!({"clusterName": "c"})).await;
    call(
        &s,
        "ecs",
        "RegisterTaskDefinition",
        json!({"family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
               "memory": "512", "containerDefinitions": [{"name": "app", "image": "busybox"}]}),
    )
    .await;
    s
}

async fn task_arns(s: &Server, status: &str) -> Vec<Value> {
    let out = call(s, "ecs", "ListTasks", json!({"cluster": "c", "desiredStatus": status, "maxResults": 100})).await;
    out["taskArns"].as_array().expect("taskArns").clone()
}

/// Runs housekeeping passes until one leaves nothing over; returns how many it took.
async fn housekeep(s: &Server, h: &Housekeeping) -> usize {
    for pass in 1..=50 {
        if !housekeeping(s, h).await.expect("housekeeping") {
            return pass;
        }
    }
    panic!("housekeeping still had work after 50 passes");
}

#[tokio::test]
async fn run_task_of_ten_with_tags_then_expiry_in_small_transactions() {
    let s = limited_server().await;
    // Ten tasks, each a task document and its tags: 20 operations, more than one transaction.
    let out = call(
        &s,
        "ecs",
        "RunTask",
        json!({"cluster": "c", "taskDefinition": "f", "count": 10, "launchType": "FARGATE",
               "tags": [{"key": "team", "value": "a"}],
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}}),
    )
    .await;
    assert_eq!(out["tasks"].as_array().unwrap().len(), 10, "{out}");
    assert_eq!(out["failures"].as_array().unwrap().len(), 0, "{out}");
    let arns = task_arns(&s, "RUNNING").await;
    assert_eq!(arns.len(), 10);
    let tags = call(&s, "ecs", "ListTagsForResource", json!({"resourceArn": arns[9]})).await;
    assert_eq!(tags["tags"][0]["key"], "team");
    for a in &arns {
        call(&s, "ecs", "StopTask", json!({"cluster": "c", "task": a})).await;
    }
    assert_eq!(task_arns(&s, "STOPPED").await.len(), 10);
    let h = Housekeeping::new(Duration::from_secs(10), Duration::ZERO, Duration::ZERO);
    // Each stopped task goes with its tags and protection (three deletes): five fit in 16
    // operations, so ten take two passes, the first leaving work over.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(housekeep(&s, &h).await, 2);
    assert!(task_arns(&s, "STOPPED").await.is_empty());
}

#[tokio::test]
async fn a_service_scales_out_and_is_deleted_within_the_limits() {
    let s = limited_server().await;
    call(
        &s,
        "ecs",
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "f", "desiredCount": 40,
               "propagateTags": "SERVICE", "tags": [{"key": "k", "value": "v"}],
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}}),
    )
    .await;
    let settings = estiba_core::deploy::Settings::default();
    for _ in 0..20 {
        crate::controller::services::services_pass(&s, &settings).await;
        if task_arns(&s, "RUNNING").await.len() == 40 {
            break;
        }
    }
    assert_eq!(task_arns(&s, "RUNNING").await.len(), 40, "40 tasks, fewer per pass");
    call(&s, "ecs", "DeleteService", json!({"cluster": "c", "service": "web", "force": true})).await;
    for _ in 0..20 {
        crate::controller::services::services_pass(&s, &settings).await;
    }
    assert!(task_arns(&s, "RUNNING").await.is_empty());
    let out = call(&s, "ecs", "DescribeServices", json!({"cluster": "c", "services": ["web"]})).await;
    assert_eq!(out["services"][0]["status"], "INACTIVE", "{out}");
    let h = Housekeeping::new(Duration::from_secs(10), Duration::ZERO, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(20)).await;
    housekeep(&s, &h).await;
    let out = call(&s, "ecs", "DescribeServices", json!({"cluster": "c", "services": ["web"]})).await;
    assert_eq!(out["services"].as_array().unwrap().len(), 0, "{out}");
    assert!(task_arns(&s, "STOPPED").await.is_empty());
    assert!(s.view.read().service_deployments.is_empty());
}

#[tokio::test]
async fn delete_alarms_of_thirty_with_their_history() {
    let s = limited_server().await;
    let names: Vec<String> = (0..30).map(|i| format!("alarm-{i:02}")).collect();
    for n in &names {
        call(
            &s,
            "monitoring",
            "PutMetricAlarm",
            json!({"AlarmName": n, "MetricName": "CPUUtilization", "Namespace": "AWS/ECS", "Statistic": "Average",
                   "Period": 60, "EvaluationPeriods": 1, "Threshold": 50.0,
                   "ComparisonOperator": "GreaterThanThreshold"}),
        )
        .await;
    }
    let out = call(&s, "monitoring", "DescribeAlarms", json!({"MaxRecords": 100})).await;
    assert_eq!(out["MetricAlarms"].as_array().unwrap().len(), 30);
    call(&s, "monitoring", "DeleteAlarms", json!({"AlarmNames": names})).await;
    let out = call(&s, "monitoring", "DescribeAlarms", json!({"MaxRecords": 100})).await;
    assert_eq!(out["MetricAlarms"].as_array().map_or(0, Vec::len), 0, "{out}");
    // Each deleted alarm's history says so.
    let out = call(&s, "monitoring", "DescribeAlarmHistory", json!({"AlarmName": "alarm-29"})).await;
    let items = out["AlarmHistoryItems"].as_array().unwrap();
    assert!(items.iter().any(|i| i["HistorySummary"].as_str().unwrap_or("").contains("deleted")), "{out}");
}

#[tokio::test]
async fn trim_children_leaves_what_fits_with_the_parent() {
    use estiba_core::alarms::{alarm_key, alarms_prefix, AlarmDoc};
    use estiba_store::Compare;
    let s = limited_server().await;
    // Forty alarms stand in for children, the cluster for their parent.
    let scope = estiba_core::Scope::new("123456789012", "us-east-1");
    for i in 0..40 {
        call(
            &s,
            "monitoring",
            "PutMetricAlarm",
            json!({"AlarmName": format!("c{i:02}"), "MetricName": "m", "Namespace": "n", "Statistic": "Average",
                   "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0,
                   "ComparisonOperator": "GreaterThanThreshold"}),
        )
        .await;
    }
    let parent = crate::keys::cluster(&scope, "c");
    let children = |st: &crate::view::State| -> Vec<String> {
        st.docs::<AlarmDoc>(crate::services::cloudwatch::alarms_table(), &alarms_prefix(&scope))
            .map(|d| d.key.clone())
            .collect()
    };
    s.trim_children(|st| {
        let rev = st.clusters.get(&parent)?.rev;
        Some((vec![Compare::mod_revision(&parent, rev)], 2, children(st)))
    })
    .await
    .unwrap();
    let left = children(&s.view.read());
    // Two full batches of 16 went; the 8 left fit one transaction beside the parent's own two
    // operations.
    assert_eq!(left.len(), 40 - 2 * LIMIT);
    // The children went in order.
    assert_eq!(left.last(), Some(&alarm_key(&scope, "c39")));
    // No parent: nothing to do.
    s.trim_children(|_| None).await.unwrap();
    assert_eq!(children(&s.view.read()).len(), 40 - 2 * LIMIT);
}

#[tokio::test]
async fn batches_halve_until_they_fit_and_keep_their_order() {
    use estiba_store::{Op, Txn};
    let s = limited_server().await;
    let keys: Vec<String> = (0..37).map(|i| format!("test/b/{i:02}")).collect();
    let sizes = s
        .transact_in_batches::<_, crate::WriteError>(keys.len(), |_, range| {
            let n = range.len();
            Ok((keys[range].iter().fold(Txn::new(), |t, k| t.then(Op::put(k, "x"))), n))
        })
        .await
        .unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 37);
    assert!(sizes.iter().all(|n| *n <= LIMIT), "{sizes:?}");
    for k in &keys {
        assert!(s.store.get(k).await.unwrap().is_some(), "{k}");
    }
}

#[tokio::test]
async fn registrars_commit_what_fits_and_say_what_is_left() {
    use estiba_store::{Op, Txn};
    let s = limited_server().await;
    // Forty independent writes of two operations each: eight fit in 16.
    let groups = |from: usize| -> Vec<Txn> {
        (from..40)
            .map(|i| {
                Txn::new().then(Op::put(format!("test/r/{i:02}/a"), "x")).then(Op::put(format!("test/r/{i:02}/b"), "x"))
            })
            .collect()
    };
    assert!(crate::controller::commit_bounded(&s, groups(0), "test").await.unwrap());
    assert!(s.store.get("test/r/07/b").await.unwrap().is_some());
    assert!(s.store.get("test/r/08/a").await.unwrap().is_none());
    // A group too big for any transaction is skipped, not retried for ever.
    let huge = (0..LIMIT + 1).fold(Txn::new(), |t, i| t.then(Op::put(format!("test/h/{i}"), "x")));
    assert!(!crate::controller::commit_bounded(&s, vec![huge], "test").await.unwrap());
    assert!(s.store.get("test/h/0").await.unwrap().is_none());
    assert!(!crate::controller::commit_bounded(&s, groups(32), "test").await.unwrap());
    assert!(s.store.get("test/r/39/b").await.unwrap().is_some());
}

#[tokio::test]
async fn an_expired_service_with_many_records_goes_in_batches() {
    use estiba_store::{Op, Txn};
    let s = limited_server().await;
    call(
        &s,
        "ecs",
        "CreateService",
        json!({"cluster": "c", "serviceName": "old", "taskDefinition": "f", "desiredCount": 0,
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}}),
    )
    .await;
    // Forty more deployment records than one transaction can take with the service.
    let scope = estiba_core::Scope::new("123456789012", "us-east-1");
    let record = serde_json::to_vec(&estiba_api::ecs::ServiceDeployment::default()).unwrap();
    for i in 0..40 {
        let key = crate::keys::service_deployment(&scope, "c", "old", &format!("extra{i:02}"));
        assert!(s.commit(Txn::new().then(Op::put(key, record.clone()))).await.unwrap());
    }
    let records = |s: &Server| {
        crate::view::State::range(
            &s.view.read().service_deployments,
            &crate::keys::service_deployments_of(&scope, "c", "old"),
        )
        .count()
    };
    assert!(records(&s) > 40);
    call(&s, "ecs", "DeleteService", json!({"cluster": "c", "service": "old"})).await;
    let settings = estiba_core::deploy::Settings::default();
    crate::controller::services::services_pass(&s, &settings).await;
    let out = call(&s, "ecs", "DescribeServices", json!({"cluster": "c", "services": ["old"]})).await;
    assert_eq!(out["services"][0]["status"], "INACTIVE", "{out}");
    let h = Housekeeping::new(Duration::from_secs(10), Duration::ZERO, Duration::ZERO);
    // The records go first, 16 at a time under the guard; then the service with the rest.
    assert!(housekeep(&s, &h).await >= 3);
    assert_eq!(records(&s), 0);
    let out = call(&s, "ecs", "DescribeServices", json!({"cluster": "c", "services": ["old"]})).await;
    assert_eq!(out["services"].as_array().unwrap().len(), 0, "{out}");
}

#[tokio::test]
async fn a_daemon_on_twenty_instances_is_placed_and_deleted_within_the_limits() {
    let s = limited_server().await;
    let mi = json!({"infrastructureRoleArn": "arn:aws:iam::000000000000:role/r",
                    "instanceLaunchTemplate": {"ec2InstanceProfileArn": "arn:aws:iam::000000000000:instance-profile/p",
                                               "networkConfiguration": {"subnets": ["subnet-12345678"]}}});
    call(&s, "ecs", "CreateCapacityProvider", json!({"name": "mi", "managedInstancesProvider": mi})).await;
    call(
        &s,
        "ecs",
        "PutClusterCapacityProviders",
        json!({"cluster": "c", "capacityProviders": ["mi"], "defaultCapacityProviderStrategy": []}),
    )
    .await;
    for _ in 0..20 {
        call(&s, "ecs", "RegisterContainerInstance", json!({"cluster": "c"})).await;
    }
    call(
        &s,
        "ecs",
        "RegisterDaemonTaskDefinition",
        json!({"family": "agent", "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 16}]}),
    )
    .await;
    let d = call(&s, "ecs", "CreateDaemon",
                 json!({"clusterArn": "c", "daemonName": "mon", "daemonTaskDefinitionArn": "agent:1",
                        "capacityProviderArns": ["mi"], "tags": [{"key": "k", "value": "v"}], "propagateTags": "DAEMON"}))
        .await;
    // Twenty tasks with their tags: more than one transaction of 16 operations.
    let mut passes = 0;
    while task_arns(&s, "RUNNING").await.len() < 20 && passes < 20 {
        crate::controller::daemons::daemons_pass(&s).await;
        passes += 1;
    }
    assert_eq!(task_arns(&s, "RUNNING").await.len(), 20, "one task per instance, fewer per pass");
    assert!(passes > 1, "the placements were split over passes");
    call(&s, "ecs", "DeleteDaemon", json!({"daemonArn": d["daemonArn"]})).await;
    for _ in 0..20 {
        crate::controller::daemons::daemons_pass(&s).await;
    }
    assert!(task_arns(&s, "RUNNING").await.is_empty());
    let left = call(&s, "ecs", "ListDaemons", json!({})).await;
    assert_eq!(left["daemonSummariesList"], json!([]), "the deleted daemon is gone");
}
