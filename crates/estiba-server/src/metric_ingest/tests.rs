use std::time::Duration;

use estiba_core::metric_time::MetricClock;
use estiba_metricstore::{MetricId, MetricStore, Query, Statistic, UnitFilter};

use super::*;

/// 2025-12-01T00:00:00Z, in ms.
const T0: i64 = 1_764_547_200_000;
const ARN1: &str = "arn:aws:ecs:us-east-1:000000000000:task/c1/t1";
const ARN2: &str = "arn:aws:ecs:us-east-1:000000000000:task/c1/t2";

fn sample(arn: &str, ts: i64, cpu_ns: u64, mem: u64) -> MetricSample {
    MetricSample {
        task_arn: arn.into(),
        timestamp: ts,
        cpu_usage_ns: Some(cpu_ns),
        memory_usage_bytes: Some(mem),
        network_rx_bytes: Some(ts as u64 / 1000 * 100),
        network_tx_bytes: Some(0),
        ..Default::default()
    }
}

fn info(arn: &str) -> Option<TaskInfo> {
    let (scope, cluster, _) = parse_task_arn(arn)?;
    Some(TaskInfo {
        scope,
        cluster: cluster.into(),
        service: Some("web".into()),
        family: Some("burn".into()),
        cpu_units: Some(256.0),
        memory_mib: Some(512.0),
        insights: true,
    })
}

fn get(store: &MetricStore, ns: &str, name: &str, dims: &[(&str, &str)], start: i64, end: i64) -> Vec<Vec<f64>> {
    let id = MetricId::new(
        "000000000000",
        "us-east-1",
        ns,
        name,
        dims.iter().map(|(n, v)| Dimension::new(*n, *v)).collect(),
    );
    let q = Query {
        start,
        end,
        period: 60,
        statistics: vec![
            Statistic::SampleCount,
            Statistic::Average,
            Statistic::Minimum,
            Statistic::Maximum,
            Statistic::Sum,
        ],
        unit: UnitFilter::Each,
    };
    store.get(&id, &q, end).unwrap().into_iter().map(|d| d.values.into_iter().map(Option::unwrap).collect()).collect()
}

#[test]
fn parses_task_arns() {
    let (scope, cluster, id) = parse_task_arn(ARN1).unwrap();
    assert_eq!((scope.account.as_str(), scope.region.as_str(), cluster, id), ("000000000000", "us-east-1", "c1", "t1"));
    assert_eq!(parse_task_arn("arn:aws:ecs:us-east-1:000000000000:cluster/c1"), None);
}

#[test]
fn a_counter_is_spread_over_the_minutes_its_interval_covers() {
    let mut acc = Accumulator::default();
    // 90 s between samples, from 30 s into minute 0 to the end of minute 1: a third of the
    // CPU time falls in minute 0, two thirds in minute 1.
    acc.samples(&[sample(ARN1, T0 + 30_000, 0, 1 << 20)], |t| t);
    acc.samples(&[sample(ARN1, T0 + 120_000, 90_000_000_000, 2 << 20)], |t| t);
    let (tasks, _) = acc.take(T0 + 120_000, 0);
    assert_eq!(tasks.len(), 2);
    let (m0, m1) = (&tasks[0].1[ARN1], &tasks[1].1[ARN1]);
    assert_eq!((tasks[0].0, tasks[1].0), (T0, T0 + 60_000));
    assert!((m0.cpu_ns - 30e9).abs() < 1.0 && (m1.cpu_ns - 60e9).abs() < 1.0, "{m0:?} {m1:?}");
    assert_eq!((m0.cpu_ms, m1.cpu_ms), (30_000.0, 60_000.0));
    // A gauge counts once in every minute the interval touches.
    assert_eq!((m0.mem_n, m0.mem_bytes_sum), (1, (2 << 20) as f64));
    // Later samples for written minutes are dropped; the next minute still counts.
    acc.samples(&[sample(ARN1, T0 + 150_000, 120_000_000_000, 2 << 20)], |t| t);
    let (tasks, _) = acc.take(T0 + 180_000, 0);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].0, T0 + 120_000);
    // A counter that went backwards (a restarted cgroup) adds nothing.
    acc.samples(&[sample(ARN1, T0 + 200_000, 5, 2 << 20)], |t| t);
    let (tasks, _) = acc.take(T0 + 240_000, 0);
    assert_eq!(tasks[0].1[ARN1].cpu_ns, 0.0);
    // Quiet tasks are forgotten.
    acc.take(T0 + 240_000, T0 + 250_000);
    assert!(acc.prev.is_empty());
}

#[test]
fn service_utilization_is_a_statistic_set_over_its_tasks() {
    let mut acc = Accumulator::default();
    // t1 uses a quarter of a core (256 units: 100 % of its 256), t2 an eighth (50 %).
    let quarter = 15_000_000_000u64; // 15 s of CPU per 60 s
    acc.samples(&[sample(ARN1, T0, 0, 256 << 20), sample(ARN2, T0, 0, 128 << 20)], |t| t);
    acc.samples(
        &[sample(ARN1, T0 + 60_000, quarter, 256 << 20), sample(ARN2, T0 + 60_000, quarter / 2, 128 << 20)],
        |t| t,
    );
    let (tasks, _) = acc.take(T0 + 60_000, 0);
    let puts = task_datums(T0, &tasks[0].1, info);
    let dir = tempfile::tempdir().unwrap();
    let store = MetricStore::open(dir.path(), Default::default()).unwrap();
    for p in &puts {
        store.put(&p.account, &p.region, &p.namespace, std::slice::from_ref(&p.datum), T0 + 60_000).unwrap();
    }
    let svc = [("ClusterName", "c1"), ("ServiceName", "web")];
    let cpu = get(&store, "AWS/ECS", "CPUUtilization", &svc, T0, T0 + 60_000);
    assert_eq!(cpu.len(), 1);
    let [n, avg, min, max, sum] = cpu[0][..] else { panic!("{cpu:?}") };
    assert_eq!(n, 2.0);
    assert!((avg - 75.0).abs() < 1e-6 && (min - 50.0).abs() < 1e-6 && (max - 100.0).abs() < 1e-6, "{cpu:?}");
    assert!((sum - 150.0).abs() < 1e-6);
    let cluster = get(&store, "AWS/ECS", "CPUUtilization", &[("ClusterName", "c1")], T0, T0 + 60_000);
    assert!((cluster[0][1] - 75.0).abs() < 1e-6);
    let mem = get(&store, "AWS/ECS", "MemoryUtilization", &svc, T0, T0 + 60_000);
    assert!((mem[0][1] - 37.5).abs() < 1e-6, "{mem:?}");
    let fam = [("ClusterName", "c1"), ("TaskDefinitionFamily", "burn")];
    let used = get(&store, "ECS/ContainerInsights", "CpuUtilized", &fam, T0, T0 + 60_000);
    assert!((used[0][4] - 384.0).abs() < 1e-6, "{used:?}");
    let reserved = get(&store, "ECS/ContainerInsights", "MemoryReserved", &svc, T0, T0 + 60_000);
    assert_eq!(reserved[0][4], 1024.0);
    let rx = get(&store, "ECS/ContainerInsights", "NetworkRxBytes", &svc, T0, T0 + 60_000);
    assert!((rx[0][1] - 100.0).abs() < 1e-6, "100 bytes a second: {rx:?}");
    // Without Container Insights, only AWS/ECS.
    let plain = task_datums(T0, &tasks[0].1, |a| info(a).map(|i| TaskInfo { insights: false, ..i }));
    assert!(plain.iter().all(|p| p.namespace == "AWS/ECS"), "{plain:?}");
    assert_eq!(plain.len(), 4);
}

#[test]
fn compressed_time_spreads_samples_over_aws_minutes() {
    // --metric-period 5s: samples 5 real seconds apart cover one AWS minute each.
    let clock = MetricClock::new(T0, Duration::from_secs(5));
    let mut acc = Accumulator::default();
    for i in 0..4u64 {
        // A quarter of a core: 1.25 s of CPU per 5 real seconds.
        acc.samples(&[sample(ARN1, T0 + i as i64 * 5000, i * 1_250_000_000, 0)], |t| clock.to_aws(t));
    }
    let (tasks, _) = acc.take(clock.to_aws(T0 + 15_000), 0);
    assert_eq!(tasks.len(), 3);
    for (m, t) in &tasks {
        let puts = task_datums(*m, t, info);
        let cpu = puts
            .iter()
            .find(|p| p.datum.name == "CPUUtilization" && p.datum.dimensions.len() == 2)
            .expect("service CPUUtilization");
        assert_eq!(cpu.datum.value, Value::Single(100.0));
    }
}

#[test]
fn load_balancer_counters_become_per_minute_counts() {
    let mut acc = Accumulator::default();
    let report = |ts: i64, requests: u64| LbMetrics {
        node: "n1".into(),
        timestamp: ts,
        load_balancers: [("app/lb/1".to_owned(), [("RequestCount".to_owned(), requests)].into())].into(),
        target_groups: [(
            "targetgroup/tg/2".to_owned(),
            [
                ("RequestCount".to_owned(), requests),
                ("HTTPCode_Target_2XX_Count".to_owned(), requests),
                ("TargetResponseTimeUsSum".to_owned(), requests * 20_000),
                ("TargetResponseTimeCount".to_owned(), requests),
            ]
            .into(),
        )]
        .into(),
    };
    acc.lb_report(&report(T0, 100), |t| t);
    acc.lb_report(&report(T0 + 60_000, 160), |t| t);
    let (_, lbs) = acc.take(T0 + 60_000, 0);
    assert_eq!(lbs.len(), 1);
    let topo = LbTopology {
        scopes: [("app/lb/1".to_owned(), ("000000000000".to_owned(), "us-east-1".to_owned()))].into(),
        group_lbs: [("targetgroup/tg/2".to_owned(), vec!["app/lb/1".to_owned()])].into(),
        health: [("targetgroup/tg/2".to_owned(), (3, 1))].into(),
    };
    let puts = lb_datums(T0, &lbs[0].1, &topo);
    let find = |name: &str, ndims: usize| {
        puts.iter()
            .find(|p| p.datum.name == name && p.datum.dimensions.len() == ndims)
            .unwrap_or_else(|| panic!("{name} with {ndims} dimensions in {puts:?}"))
            .datum
            .value
            .clone()
    };
    assert_eq!(find("RequestCount", 1), Value::Single(60.0));
    assert_eq!(find("RequestCount", 2), Value::Single(60.0));
    assert_eq!(find("HTTPCode_Target_2XX_Count", 2), Value::Single(60.0));
    assert_eq!(find("RequestCountPerTarget", 1), Value::Single(20.0));
    assert_eq!(find("RequestCountPerTarget", 2), Value::Single(20.0));
    assert_eq!(find("HealthyHostCount", 2), Value::Single(3.0));
    assert_eq!(find("UnHealthyHostCount", 2), Value::Single(1.0));
    let Value::Statistics(rt) = find("TargetResponseTime", 2) else { panic!() };
    assert_eq!(rt.sample_count, 60.0);
    assert!((rt.sum / rt.sample_count - 0.02).abs() < 1e-9);
    assert!(puts.iter().all(|p| p.namespace == "AWS/ApplicationELB" && p.account == "000000000000"));
}

#[test]
fn a_sender_in_step_with_this_clock_is_left_alone() {
    let mut sk = Skews::default();
    // Delivered within a few ms, or up to `behind_ok` late: no shift.
    assert_eq!(sk.shift(ARN1, T0, T0 + 5, 3000), 0);
    assert_eq!(sk.shift(ARN1, T0 + 5000, T0 + 5010, 3000), 0);
    assert_eq!(sk.shift(ARN1, T0 + 10_000, T0 + 12_500, 3000), 0);
    // One batch held up 20 s (a busy server) keeps its stamps: they are true.
    assert_eq!(sk.shift(ARN1, T0 + 15_000, T0 + 35_000, 3000), 0);
    assert_eq!(sk.shift(ARN1, T0 + 40_000, T0 + 40_010, 3000), 0);
}

#[test]
fn a_sender_whose_clock_is_off_is_moved_onto_this_one() {
    // 40 s behind: its samples would land in minutes already written.
    let mut sk = Skews::default();
    assert_eq!(sk.shift(ARN1, T0 - 40_000, T0, 3000), 40_000);
    assert_eq!(sk.shift(ARN1, T0 - 35_000, T0 + 5_020, 3000), 40_000);
    // A quicker delivery refines what was learned.
    assert_eq!(sk.shift(ARN1, T0 - 30_000, T0 + 9_990, 3000), 39_990);
    // 10 minutes ahead: its stamps are pulled back, so they pin nothing in the future.
    let mut sk = Skews::default();
    assert_eq!(sk.shift(ARN2, T0 + 600_000, T0, 3000), -600_000);
    assert_eq!(sk.shift(ARN2, T0 + 605_000, T0 + 5_000, 3000), -600_000);
    // Slightly ahead (within a second): not shifted, but never later than its receipt.
    let mut sk = Skews::default();
    assert_eq!(sk.shift(ARN2, T0 + 400, T0, 3000), -400);
    assert_eq!(sk.shift(ARN2, T0 + 5_000, T0 + 5_100, 3000), 0);
}

#[test]
fn a_clock_set_back_is_learned_anew_once_it_stays_back() {
    let mut sk = Skews::default();
    assert_eq!(sk.shift(ARN1, T0, T0, 3000), 0);
    // The sender's clock jumps 20 s back: at first taken as late delivery...
    assert_eq!(sk.shift(ARN1, T0 - 15_000, T0 + 5_000, 3000), 0);
    assert_eq!(sk.shift(ARN1, T0 + 10_000, T0 + 30_000, 3000), 0);
    // ...then, once every batch has been that late for a while, as the clock.
    assert_eq!(sk.shift(ARN1, T0 + 15_000, T0 + 35_000, 3000), 20_000);
    assert_eq!(sk.shift(ARN1, T0 + 20_000, T0 + 40_000, 3000), 20_000);
    sk.forget(T0 + 41_000);
    assert!(sk.by.is_empty());
}

#[test]
fn a_skewed_sender_still_fills_its_minutes() {
    // A task on a node 90 s behind, sampled every 5 s for two minutes: with the shift, the
    // minutes it ran in get its CPU; without it, every sample would be older than the
    // minutes already written.
    let mut acc = Accumulator::default();
    let mut sk = Skews::default();
    let skew = 90_000;
    acc.take(T0, 0);
    for i in 0..=24u64 {
        let real = T0 + i as i64 * 5000;
        let s = sample(ARN1, real - skew, i * 2_500_000_000, 1 << 20);
        let shift = sk.shift(ARN1, s.timestamp, real, 3000);
        acc.samples(&[MetricSample { timestamp: s.timestamp + shift, ..s }], |t| t);
    }
    let (tasks, _) = acc.take(T0 + 120_000, 0);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for (_, m) in &tasks {
        let t = &m[ARN1];
        // 2.5 s of CPU every 5 s: half a core.
        assert!((t.cpu_ns / (t.cpu_ms * 1e6) - 0.5).abs() < 1e-9, "{t:?}");
    }
}
