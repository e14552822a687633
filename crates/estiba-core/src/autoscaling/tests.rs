use super::*;
use crate::alarms;
use estiba_api::application_autoscaling::{
    MetricDimension, MetricStatistic, PredefinedMetricSpecification, ScalableTargetAction, SuspendedState,
    TargetTrackingMetric, TargetTrackingMetricDataQuery, TargetTrackingMetricStat,
};

const UUID_HIGH: &str = "22c1fbb2-aed5-484d-9cc2-131ed021b611";
const UUID_LOW: &str = "fcd80aef-5161-4890-aeb4-35dde11ff42c";

fn web() -> EcsService {
    EcsService { cluster: "default".into(), service: "web-app".into() }
}

fn scope() -> Scope {
    Scope::new("123456789012", "us-east-1")
}

fn bounds(min: i32, max: i32) -> Bounds {
    Bounds { min_capacity: min, max_capacity: max, suspended: Suspended::default() }
}

fn register(min: Option<i32>, max: Option<i32>) -> RegisterScalableTargetRequest {
    RegisterScalableTargetRequest {
        resource_id: "service/default/web-app".into(),
        scalable_dimension: ScalableDimension::EcsServiceDesiredCount,
        service_namespace: ServiceNamespace::Ecs,
        min_capacity: min,
        max_capacity: max,
        ..Default::default()
    }
}

#[test]
fn resource_ids() {
    let s = ecs_service(ServiceNamespace::Ecs, ScalableDimension::EcsServiceDesiredCount, "service/default/web-app")
        .unwrap();
    assert_eq!(s, web());
    assert_eq!(s.resource_id(), "service/default/web-app");
    for bad in ["service/default", "default/web-app", "service//web-app", "service/a/b/c", "cluster/default/web-app"] {
        let e = ecs_service(ServiceNamespace::Ecs, ScalableDimension::EcsServiceDesiredCount, bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationException, "{bad}");
    }
    assert!(ecs_service(ServiceNamespace::Dynamodb, ScalableDimension::EcsServiceDesiredCount, "service/a/b").is_err());
    let e: ApiError = ScalingError::validation("x").into();
    assert_eq!(e.code, "ValidationException");
}

#[test]
fn arns() {
    assert_eq!(
        policy_arn(&scope(), "6d8972f3-efc8-437c-92d1-6270f29a66e7", "service/default/web-app", "cpu75"),
        "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:6d8972f3-efc8-437c-92d1-6270f29a66e7:resource/ecs/service/default/web-app:policyName/cpu75"
    );
    assert_eq!(
        scheduled_action_arn(&scope(), "u", "service/default/web-app", "night"),
        "arn:aws:autoscaling:us-east-1:123456789012:scheduledAction:u:resource/ecs/service/default/web-app:scheduledActionName/night"
    );
    assert_eq!(
        scalable_target_arn(&scope(), "0123456789abcdef0123456789abcdef"),
        "arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/0123456789abcdef0123456789abcdef"
    );
    assert!(service_linked_role_arn(&scope()).ends_with("AWSServiceRoleForApplicationAutoScaling_ECSService"));
}

#[test]
fn registering_targets() {
    let b = register_scalable_target(None, &register(Some(1), Some(10))).unwrap();
    assert_eq!(b, bounds(1, 10));
    let e = register_scalable_target(None, &register(Some(1), None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationException);
    let e = register_scalable_target(None, &register(Some(5), Some(2))).unwrap_err();
    assert_eq!(e.message, "Minimum capacity (5) cannot be greater than maximum capacity (2)");
    assert!(register_scalable_target(None, &register(Some(-1), Some(2))).is_err());
    // An update keeps what it does not name.
    let updated = register_scalable_target(Some(&b), &register(None, Some(20))).unwrap();
    assert_eq!(updated, bounds(1, 20));
    let mut req = register(None, None);
    req.suspended_state = Some(SuspendedState { dynamic_scaling_in_suspended: Some(true), ..Default::default() });
    let suspended = register_scalable_target(Some(&updated), &req).unwrap();
    assert!(suspended.suspended.dynamic_scaling_in && !suspended.suspended.dynamic_scaling_out);
    req.suspended_state = Some(SuspendedState { scheduled_scaling_suspended: Some(true), ..Default::default() });
    let both = register_scalable_target(Some(&suspended), &req).unwrap();
    assert!(both.suspended.dynamic_scaling_in && both.suspended.scheduled_scaling);
    assert_eq!(
        both.suspended.to_wire(),
        SuspendedState {
            dynamic_scaling_in_suspended: Some(true),
            dynamic_scaling_out_suspended: Some(false),
            scheduled_scaling_suspended: Some(true)
        }
    );
    // Documents keep camelCase names.
    let json = serde_json::to_value(both).unwrap();
    assert_eq!(json["minCapacity"], 1);
    assert_eq!(json["suspended"]["dynamicScalingIn"], true);
}

#[test]
fn new_bounds_move_the_desired_count() {
    // The documented DynamoDB example, for ECS: lowering the maximum to 10.
    let (n, a) = enforce_bounds(&bounds(5, 10), 12).unwrap();
    assert_eq!(n, 10);
    assert_eq!(a.description, "Setting desired count to 10.");
    assert_eq!(a.cause, "maximum capacity was set to 10");
    assert_eq!(
        a.status_message.as_deref(),
        Some("Successfully set desired count to 10. Change successfully fulfilled by ecs.")
    );
    let (n, a) = enforce_bounds(&bounds(5, 10), 2).unwrap();
    assert_eq!((n, a.cause.as_str()), (5, "minimum capacity was set to 5"));
    assert_eq!(enforce_bounds(&bounds(5, 10), 7), None);
}

#[test]
fn activity_texts() {
    let cause =
        alarm_cause("TargetTracking-service/default/web-app-AlarmHigh-22c1fbb2-aed5-484d-9cc2-131ed021b611", "cpu75");
    assert_eq!(
        cause,
        "monitor alarm TargetTracking-service/default/web-app-AlarmHigh-22c1fbb2-aed5-484d-9cc2-131ed021b611 in state ALARM triggered policy cpu75"
    );
    // The API reference's example.
    let a = Activity::desired_count_set(1, alarm_cause("web-app-cpu-lt-25", "web-app-cpu-lt-25"));
    let wire = a.to_wire(
        "e6c5f7d1-dbbb-4a3f-89b2-51f33e766399",
        "service/default/web-app",
        1462575838.171,
        Some(1462575872.111),
    );
    let json = serde_json::to_value(&wire).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "ScalableDimension": "ecs:service:DesiredCount",
            "Description": "Setting desired count to 1.",
            "ResourceId": "service/default/web-app",
            "ActivityId": "e6c5f7d1-dbbb-4a3f-89b2-51f33e766399",
            "StartTime": 1462575838.171,
            "ServiceNamespace": "ecs",
            "EndTime": 1462575872.111,
            "Cause": "monitor alarm web-app-cpu-lt-25 in state ALARM triggered policy web-app-cpu-lt-25",
            "StatusMessage": "Successfully set desired count to 1. Change successfully fulfilled by ecs.",
            "StatusCode": "Successful"
        })
    );
    // The not-scaled example.
    let a = Activity::not_scaled(
        alarm_cause("web-app-cpu-gt-75", "web-app-cpu-gt-75"),
        NotScaled::AlreadyAtMaxCapacity { max_capacity: 4 },
    );
    let json = serde_json::to_value(a.to_wire(
        "4d759079-a31f-4d0c-8468-504c56e2eecf",
        "service/default/web-app",
        1664928867.915,
        None,
    ))
    .unwrap();
    assert_eq!(json["Description"], "Attempting to scale due to alarm triggered");
    assert_eq!(json["StatusCode"], "Failed");
    assert_eq!(json["NotScaledReasons"], serde_json::json!([{"Code": "AlreadyAtMaxCapacity", "MaxCapacity": 4}]));
    assert!(json.get("EndTime").is_none());
    let a = Activity::scheduled("my-second-scheduled-action", 5, 10);
    assert_eq!(a.description, "Setting min capacity to 5 and max capacity to 10");
    assert_eq!(a.cause, "scheduled action name my-second-scheduled-action was triggered");
    assert_eq!(a.status_message.as_deref(), Some("Successfully set min capacity to 5 and max capacity to 10"));
    let a = Activity::desired_count_in_progress(4, "c");
    assert_eq!((a.status_code, a.status_message), (ScalingActivityStatusCode::InProgress, None));
    assert_eq!(Activity::desired_count_failed(4, "c", "gone").status_code, ScalingActivityStatusCode::Failed);
    assert_eq!(
        NotScaled::AlreadyAtMinCapacity { min_capacity: 1 }.to_wire(),
        NotScaledReason { code: "AlreadyAtMinCapacity".into(), min_capacity: Some(1), ..Default::default() }
    );
}

fn tt(predefined: MetricType, label: Option<&str>, target: f64) -> TargetTrackingScalingPolicyConfiguration {
    TargetTrackingScalingPolicyConfiguration {
        target_value: target,
        predefined_metric_specification: Some(PredefinedMetricSpecification {
            predefined_metric_type: predefined,
            resource_label: label.map(str::to_string),
        }),
        ..Default::default()
    }
}

#[test]
fn predefined_metrics() {
    let m = target_tracking_metric(&web(), &tt(MetricType::ECSServiceAverageCPUUtilization, None, 75.0)).unwrap();
    assert_eq!(
        m,
        TrackedMetric::Single {
            namespace: "AWS/ECS".into(),
            metric_name: "CPUUtilization".into(),
            dimensions: vec![("ClusterName".into(), "default".into()), ("ServiceName".into(), "web-app".into())],
            statistic: Statistic::Average,
            unit: Some(StandardUnit::Percent),
        }
    );
    let m = target_tracking_metric(&web(), &tt(MetricType::ECSServiceAverageMemoryUtilization, None, 75.0)).unwrap();
    assert!(matches!(m, TrackedMetric::Single { ref metric_name, .. } if metric_name == "MemoryUtilization"));
    let label = "app/my-alb/778d41231b141a0f/targetgroup/my-alb-target-group/943f017f100becff";
    let m = target_tracking_metric(&web(), &tt(MetricType::ALBRequestCountPerTarget, Some(label), 1000.0)).unwrap();
    assert_eq!(
        m,
        TrackedMetric::Single {
            namespace: "AWS/ApplicationELB".into(),
            metric_name: "RequestCountPerTarget".into(),
            dimensions: vec![("TargetGroup".into(), "targetgroup/my-alb-target-group/943f017f100becff".into())],
            statistic: Statistic::Sum,
            unit: None,
        }
    );
    for bad in [
        tt(MetricType::ALBRequestCountPerTarget, None, 1000.0),
        tt(MetricType::ALBRequestCountPerTarget, Some("app/my-alb/778d41231b141a0f"), 1000.0),
        tt(MetricType::ECSServiceAverageCPUUtilization, Some(label), 50.0),
        tt(MetricType::DynamoDBReadCapacityUtilization, None, 50.0),
        tt(MetricType::ECSServiceAverageCPUUtilization, None, 0.0),
        TargetTrackingScalingPolicyConfiguration { target_value: 50.0, ..Default::default() },
    ] {
        assert_eq!(target_tracking_metric(&web(), &bad).unwrap_err().code, ErrorCode::ValidationException, "{bad:?}");
    }
}

#[test]
fn customized_metrics() {
    let config = TargetTrackingScalingPolicyConfiguration {
        target_value: 100.0,
        customized_metric_specification: Some(CustomizedMetricSpecification {
            metric_name: Some("QueueDepthPerTask".into()),
            namespace: Some("MyApp".into()),
            statistic: Some(MetricStatistic::Average),
            dimensions: Some(vec![MetricDimension { name: "Queue".into(), value: "jobs".into() }]),
            unit: Some("Count".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = target_tracking_metric(&web(), &config).unwrap();
    assert_eq!(
        m,
        TrackedMetric::Single {
            namespace: "MyApp".into(),
            metric_name: "QueueDepthPerTask".into(),
            dimensions: vec![("Queue".into(), "jobs".into())],
            statistic: Statistic::Average,
            unit: Some(StandardUnit::Count),
        }
    );
    let stat = |id: &str, name: &str| TargetTrackingMetricDataQuery {
        id: id.into(),
        metric_stat: Some(TargetTrackingMetricStat {
            metric: TargetTrackingMetric {
                metric_name: Some(name.into()),
                namespace: Some("MyApp".into()),
                dimensions: None,
            },
            stat: "Sum".into(),
            unit: None,
        }),
        return_data: Some(false),
        ..Default::default()
    };
    let expr = TargetTrackingMetricDataQuery {
        id: "e1".into(),
        expression: Some("m1 / m2".into()),
        return_data: Some(true),
        ..Default::default()
    };
    let math = TargetTrackingScalingPolicyConfiguration {
        target_value: 100.0,
        customized_metric_specification: Some(CustomizedMetricSpecification {
            metrics: Some(vec![stat("m1", "Backlog"), stat("m2", "Tasks"), expr.clone()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let TrackedMetric::Math { metrics } = target_tracking_metric(&web(), &math).unwrap() else { panic!() };
    assert_eq!(metrics.len(), 3);
    assert_eq!(metrics[0].metric_stat.as_ref().unwrap().period, 60);
    // The alarm on a math metric passes CloudWatch's checks.
    let alarm = target_tracking_alarm(
        "service/default/web-app",
        TrackingAlarm::AlarmHigh,
        UUID_HIGH,
        "arn",
        &TrackedMetric::Math { metrics },
        100.0,
    );
    assert!(alarms::validate_put_metric_alarm(&alarm).is_ok());

    let mut both = math.clone();
    both.customized_metric_specification.as_mut().unwrap().metric_name = Some("X".into());
    assert!(target_tracking_metric(&web(), &both).is_err());
    let mut two = math;
    two.customized_metric_specification.as_mut().unwrap().metrics = Some(vec![stat("m1", "Backlog"), expr.clone(), {
        let mut e = expr;
        e.id = "e2".into();
        e
    }]);
    assert!(target_tracking_metric(&web(), &two).is_err());
    let incomplete = TargetTrackingScalingPolicyConfiguration {
        target_value: 1.0,
        customized_metric_specification: Some(CustomizedMetricSpecification {
            metric_name: Some("X".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(target_tracking_metric(&web(), &incomplete).is_err());
}

#[test]
fn the_alarms_target_tracking_creates() {
    let metric = target_tracking_metric(&web(), &tt(MetricType::ECSServiceAverageCPUUtilization, None, 80.0)).unwrap();
    let action = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:f671b28e-36ae-40b4-bb70-2b40a3f20c4a:resource/ecs/service/default/web-app:policyName/cpu80";
    let high =
        target_tracking_alarm("service/default/web-app", TrackingAlarm::AlarmHigh, UUID_HIGH, action, &metric, 80.0);
    let low =
        target_tracking_alarm("service/default/web-app", TrackingAlarm::AlarmLow, UUID_LOW, action, &metric, 80.0);
    assert_eq!(
        high.alarm_name,
        "TargetTracking-service/default/web-app-AlarmHigh-22c1fbb2-aed5-484d-9cc2-131ed021b611"
    );
    assert_eq!(low.alarm_name, "TargetTracking-service/default/web-app-AlarmLow-fcd80aef-5161-4890-aeb4-35dde11ff42c");
    assert_eq!(
        high.alarm_description.as_deref(),
        Some(format!("DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {action}.").as_str())
    );
    assert_eq!(high.alarm_actions, Some(vec![action.to_string()]));
    assert_eq!(
        (high.comparison_operator, high.threshold, high.evaluation_periods, high.datapoints_to_alarm, high.period),
        (Some(ComparisonOperator::GreaterThanThreshold), Some(80.0), Some(3), Some(3), Some(60))
    );
    // AlarmLow: 15 one-minute datapoints below 90 % of the target (72 for 80).
    assert_eq!(
        (low.comparison_operator, low.threshold, low.evaluation_periods, low.datapoints_to_alarm, low.period),
        (Some(ComparisonOperator::LessThanThreshold), Some(72.0), Some(15), None, Some(60))
    );
    for a in [&high, &low] {
        assert_eq!(a.namespace.as_deref(), Some("AWS/ECS"));
        assert_eq!(a.metric_name.as_deref(), Some("CPUUtilization"));
        assert_eq!(a.statistic, Some(Statistic::Average));
        assert_eq!(a.unit, Some(StandardUnit::Percent));
        assert_eq!(a.treat_missing_data.as_deref(), Some("missing"));
        let dims: Vec<(&str, &str)> =
            a.dimensions.as_ref().unwrap().iter().map(|d| (d.name.as_str(), d.value.as_str())).collect();
        assert_eq!(dims, [("ClusterName", "default"), ("ServiceName", "web-app")]);
        // CloudWatch accepts them as they are.
        let rule = alarms::validate_put_metric_alarm(a).unwrap();
        assert_eq!(rule.period, 60);
    }
    assert_eq!(TrackingAlarm::of_name(&high.alarm_name), Some(TrackingAlarm::AlarmHigh));
    assert_eq!(TrackingAlarm::of_name(&low.alarm_name), Some(TrackingAlarm::AlarmLow));
    assert_eq!(TrackingAlarm::of_name("cpu-high"), None);
    assert_eq!(TrackingAlarm::of_name("TargetTracking-x-AlarmMid-22c1fbb2-aed5-484d-9cc2-131ed021b611"), None);
}

#[test]
fn target_tracking_arithmetic() {
    // Two tasks at 75 % with a 50 % target: three tasks bring it back to 50 %.
    assert_eq!(target_tracking_capacity(2, 75.0, 50.0), 3);
    assert_eq!(target_tracking_capacity(4, 100.0, 50.0), 8);
    assert_eq!(target_tracking_capacity(3, 51.0, 50.0), 4, "rounds up");
    assert_eq!(target_tracking_capacity(4, 50.0, 50.0), 4, "no float dust");
    // Scale in: ten tasks at 30 % with a 50 % target need six.
    assert_eq!(target_tracking_capacity(10, 30.0, 50.0), 6);
    assert_eq!(target_tracking_capacity(10, 44.0, 50.0), 9, "rounds up: removes conservatively");
    assert_eq!(target_tracking_capacity(0, 80.0, 50.0), 1);
    assert_eq!(target_tracking_capacity(0, 0.0, 50.0), 0);
    // ALBRequestCountPerTarget: 3 tasks taking 1500 requests each a minute, target 1000.
    assert_eq!(target_tracking_capacity(3, 1500.0, 1000.0), 5);
}

fn at<'a>(current: i32, bounds: &'a Bounds, memory: &'a PolicyMemory, now: Now) -> Situation<'a> {
    Situation { current, bounds, memory, now }
}

fn policy(target: f64, out: i32, inn: i32) -> TargetTracking {
    TargetTracking {
        target_value: target,
        cooldowns: Cooldowns { scale_out: out, scale_in: inn },
        disable_scale_in: false,
    }
}

#[test]
fn target_tracking_decisions() {
    let p = policy(50.0, 300, 300);
    let b = bounds(1, 10);
    let none = PolicyMemory::default();
    let now = 10_000.0;
    assert_eq!(
        p.decide(TrackingAlarm::AlarmHigh, 75.0, &at(2, &b, &none, now)),
        Decision::Scale { desired: 3, direction: Direction::Out }
    );
    assert_eq!(
        p.decide(TrackingAlarm::AlarmHigh, 100.0, &at(8, &b, &none, now)),
        Decision::Scale { desired: 10, direction: Direction::Out },
        "clamped to max"
    );
    assert_eq!(
        p.decide(TrackingAlarm::AlarmHigh, 100.0, &at(10, &b, &none, now)),
        Decision::NotScaled(NotScaled::AlreadyAtMaxCapacity { max_capacity: 10 })
    );
    assert_eq!(
        p.decide(TrackingAlarm::AlarmLow, 30.0, &at(10, &b, &none, now)),
        Decision::Scale { desired: 6, direction: Direction::In }
    );
    assert_eq!(
        p.decide(TrackingAlarm::AlarmLow, 10.0, &at(1, &b, &none, now)),
        Decision::NotScaled(NotScaled::AlreadyAtMinCapacity { min_capacity: 1 })
    );
    assert_eq!(
        p.decide(TrackingAlarm::AlarmLow, 44.9, &at(5, &b, &none, now)),
        Decision::NotScaled(NotScaled::AlreadyAtDesiredCapacity { current_capacity: 5 })
    );
    let no_in = TargetTracking { disable_scale_in: true, ..p };
    assert_eq!(
        no_in.decide(TrackingAlarm::AlarmLow, 10.0, &at(5, &b, &none, now)),
        Decision::Hold(Hold::ScaleInDisabled)
    );
    assert_eq!(
        no_in.decide(TrackingAlarm::AlarmHigh, 75.0, &at(2, &b, &none, now)),
        Decision::Scale { desired: 3, direction: Direction::Out }
    );
}

#[test]
fn cooldowns() {
    let p = policy(50.0, 300, 600);
    let b = bounds(1, 20);
    let t0 = 10_000.0;
    // Scale out 2 → 4 at t0 (CPU 100 %).
    let d = p.decide(TrackingAlarm::AlarmHigh, 100.0, &at(2, &b, &PolicyMemory::default(), t0));
    assert_eq!(d, Decision::Scale { desired: 4, direction: Direction::Out });
    let m = PolicyMemory::default().after(&d, 2, 2, t0);
    assert_eq!(m.last_scale_out, Some(ScaleOut { at: t0, from: 2 }));

    // A minute later the metric still reads 100 % (new tasks not in it yet): counted from the
    // base of 2, 4 tasks are enough, so nothing more (the cooldown holds).
    assert_eq!(p.decide(TrackingAlarm::AlarmHigh, 100.0, &at(4, &b, &m, t0 + 60.0)), Decision::Hold(Hold::Cooldown));
    // The load grows: a larger scale-out goes ahead within the cooldown (2 × 150 / 50 = 6).
    let d2 = p.decide(TrackingAlarm::AlarmHigh, 150.0, &at(4, &b, &m, t0 + 120.0));
    assert_eq!(d2, Decision::Scale { desired: 6, direction: Direction::Out });
    let m2 = m.after(&d2, 4, m.scale_out_base(p.cooldowns, t0 + 120.0, 4), t0 + 120.0);
    assert_eq!(m2.last_scale_out, Some(ScaleOut { at: t0 + 120.0, from: 2 }), "the base stays");

    // Scale-in is blocked during the scale-out cooldown…
    assert_eq!(p.decide(TrackingAlarm::AlarmLow, 10.0, &at(6, &b, &m2, t0 + 300.0)), Decision::Hold(Hold::Cooldown));
    // …and allowed after it.
    let d3 = p.decide(TrackingAlarm::AlarmLow, 10.0, &at(6, &b, &m2, t0 + 420.0));
    assert_eq!(d3, Decision::Scale { desired: 2, direction: Direction::In });
    let m3 = m2.after(&d3, 6, 6, t0 + 420.0);
    // After the scale-out cooldown, a scale-out counts from the current capacity again.
    assert_eq!(m3.scale_out_base(p.cooldowns, t0 + 420.0, 2), 2);
    // The scale-in cooldown blocks the next scale-in…
    assert_eq!(p.decide(TrackingAlarm::AlarmLow, 10.0, &at(2, &b, &m3, t0 + 600.0)), Decision::Hold(Hold::Cooldown));
    // …but not a scale-out, which ends it.
    let d4 = p.decide(TrackingAlarm::AlarmHigh, 90.0, &at(2, &b, &m3, t0 + 600.0));
    assert_eq!(d4, Decision::Scale { desired: 4, direction: Direction::Out });
    let m4 = m3.after(&d4, 2, 2, t0 + 600.0);
    assert_eq!(m4.last_scale_in, None);
    let json = serde_json::to_value(m4).unwrap();
    assert_eq!(json["lastScaleOut"]["from"], 2);
    // The scale-in cooldown ends on time.
    assert_eq!(
        p.decide(TrackingAlarm::AlarmLow, 10.0, &at(2, &bounds(1, 20), &m3, t0 + 420.0 + 600.0)),
        Decision::Scale { desired: 1, direction: Direction::In }
    );
}

#[test]
fn suspension() {
    let p = policy(50.0, 0, 0);
    let mut b = bounds(1, 10);
    b.suspended.dynamic_scaling_out = true;
    let none = PolicyMemory::default();
    assert_eq!(p.decide(TrackingAlarm::AlarmHigh, 90.0, &at(2, &b, &none, 0.0)), Decision::Hold(Hold::Suspended));
    assert_eq!(
        p.decide(TrackingAlarm::AlarmLow, 10.0, &at(5, &b, &none, 0.0)),
        Decision::Scale { desired: 1, direction: Direction::In }
    );
    b.suspended = Suspended { dynamic_scaling_in: true, ..Default::default() };
    assert_eq!(p.decide(TrackingAlarm::AlarmLow, 10.0, &at(5, &b, &none, 0.0)), Decision::Hold(Hold::Suspended));
}

fn step(lo: Option<f64>, hi: Option<f64>, adj: i32) -> StepAdjustment {
    StepAdjustment { metric_interval_lower_bound: lo, metric_interval_upper_bound: hi, scaling_adjustment: adj }
}

fn steps(kind: AdjustmentType, s: Vec<StepAdjustment>) -> StepScalingPolicyConfiguration {
    StepScalingPolicyConfiguration {
        adjustment_type: Some(kind),
        step_adjustments: Some(s),
        cooldown: Some(60),
        ..Default::default()
    }
}

#[test]
fn step_adjustment_checks() {
    use AdjustmentType::*;
    let ok = |s: Vec<StepAdjustment>| validate_step_scaling(&steps(ChangeInCapacity, s));
    assert!(ok(vec![step(Some(0.0), None, 1)]).is_ok());
    assert!(ok(vec![step(None, Some(0.0), -1)]).is_ok());
    assert!(ok(vec![step(Some(0.0), Some(10.0), 1), step(Some(10.0), None, 3)]).is_ok());
    assert!(ok(vec![step(Some(-10.0), Some(0.0), 0), step(None, Some(-10.0), -2)]).is_ok());
    let msg = |s: Vec<StepAdjustment>| ok(s).unwrap_err().message;
    assert_eq!(msg(vec![]), "At least one step adjustment is required for a step scaling policy configuration");
    assert_eq!(
        msg(vec![step(Some(0.0), Some(10.0), 1)]),
        "There must be a StepAdjustment with an unspecified upper bound (i.e., upper bound is null) when one StepAdjustment has a positive upper bound"
    );
    assert_eq!(
        msg(vec![step(Some(-10.0), Some(0.0), -1)]),
        "There must be a StepAdjustment with an unspecified lower bound (i.e., lower bound is null) when one StepAdjustment has a negative lower bound"
    );
    assert_eq!(
        msg(vec![step(Some(0.0), None, 1), step(Some(5.0), None, 2)]),
        "At most one StepAdjustment may have an unspecified upper bound"
    );
    assert_eq!(
        msg(vec![step(None, Some(0.0), 1), step(None, Some(-5.0), 2)]),
        "At most one StepAdjustment may have an unspecified lower bound"
    );
    assert_eq!(
        msg(vec![step(Some(0.0), Some(20.0), 1), step(Some(10.0), None, 2)]),
        "Step adjustment intervals must not overlap"
    );
    assert_eq!(
        msg(vec![step(Some(0.0), Some(10.0), 1), step(Some(20.0), None, 2)]),
        "Step adjustment intervals must not have gaps between them"
    );
    assert!(msg(vec![step(Some(10.0), Some(5.0), 1), step(Some(10.0), None, 2)])
        .contains("must be less than the upper bound"));
    let many: Vec<StepAdjustment> =
        (0..21).map(|i| step(Some(f64::from(i)), if i == 20 { None } else { Some(f64::from(i + 1)) }, 1)).collect();
    assert_eq!(msg(many), "There can be at most 20 step adjustments per scaling policy");
    let mut c = steps(ChangeInCapacity, vec![step(Some(0.0), None, 1)]);
    c.min_adjustment_magnitude = Some(2);
    assert!(validate_step_scaling(&c).unwrap_err().message.contains("PercentChangeInCapacity"));
    c.adjustment_type = Some(PercentChangeInCapacity);
    assert!(validate_step_scaling(&c).is_ok());
    c.adjustment_type = None;
    assert!(validate_step_scaling(&c).is_err());
    assert!(validate_step_scaling(&steps(ExactCapacity, vec![step(Some(0.0), None, -1)])).is_err());
}

#[test]
fn percent_rounding_as_documented() {
    // "12.7 is rounded to 12", ".67 to 1", "-.58 to -1", "-6.67 to -6".
    assert_eq!(percent_change(127, 10, None), 12);
    assert_eq!(percent_change(67, 1, None), 1);
    assert_eq!(percent_change(58, -1, None), -1);
    assert_eq!(percent_change(667, -1, None), -6);
    assert_eq!(percent_change(10, 0, None), 0);
    // MinAdjustmentMagnitude: 25 % of 4 tasks is 1, with a minimum of 2 it adds 2.
    assert_eq!(adjusted_capacity(AdjustmentType::PercentChangeInCapacity, 25, 4, Some(2)), 6);
    assert_eq!(adjusted_capacity(AdjustmentType::PercentChangeInCapacity, -25, 4, Some(2)), 2);
    assert_eq!(adjusted_capacity(AdjustmentType::ChangeInCapacity, -2, 4, None), 2);
    assert_eq!(adjusted_capacity(AdjustmentType::ExactCapacity, 7, 4, None), 7);
}

#[test]
fn the_documented_step_scaling_example() {
    // "Step adjustments": capacity 10, breach threshold 50; scale out by 10 % between 60 and
    // 70, by 30 % from 70; scale in by 10 % between 40 and 30, by 30 % below 30.
    let out = steps(
        AdjustmentType::PercentChangeInCapacity,
        vec![step(Some(0.0), Some(10.0), 0), step(Some(10.0), Some(20.0), 10), step(Some(20.0), None, 30)],
    );
    let inn = steps(
        AdjustmentType::PercentChangeInCapacity,
        vec![step(Some(-10.0), Some(0.0), 0), step(Some(-20.0), Some(-10.0), -10), step(None, Some(-20.0), -30)],
    );
    assert!(validate_step_scaling(&out).is_ok() && validate_step_scaling(&inn).is_ok());
    let b = bounds(1, 100);
    let none = PolicyMemory::default();
    let run = |c: &StepScalingPolicyConfiguration, metric: f64| {
        step_scaling_decision(c, 50.0, metric, &at(10, &b, &none, 0.0))
    };
    assert_eq!(run(&out, 55.0), Decision::Hold(Hold::NoAction));
    assert_eq!(run(&out, 60.0), Decision::Scale { desired: 11, direction: Direction::Out });
    assert_eq!(run(&out, 70.0), Decision::Scale { desired: 13, direction: Direction::Out });
    assert_eq!(run(&inn, 45.0), Decision::Hold(Hold::NoAction));
    assert_eq!(run(&inn, 40.0), Decision::Scale { desired: 9, direction: Direction::In });
    assert_eq!(run(&inn, 30.0), Decision::Scale { desired: 7, direction: Direction::In });
    // Bounds: above the threshold the lower bound is inclusive, below it the upper bound.
    assert_eq!(matching_step(out.step_adjustments.as_deref().unwrap(), 50.0, 60.0).unwrap().scaling_adjustment, 10);
    assert_eq!(matching_step(inn.step_adjustments.as_deref().unwrap(), 50.0, 40.0).unwrap().scaling_adjustment, -10);
}

#[test]
fn step_scaling_cooldown_and_bounds() {
    let c = steps(AdjustmentType::ChangeInCapacity, vec![step(Some(0.0), Some(50.0), 1), step(Some(50.0), None, 3)]);
    let b = bounds(1, 6);
    let t0 = 1000.0;
    let d = step_scaling_decision(&c, 50.0, 60.0, &at(2, &b, &PolicyMemory::default(), t0));
    assert_eq!(d, Decision::Scale { desired: 3, direction: Direction::Out });
    let m = PolicyMemory::default().after(&d, 2, 2, t0);
    // Within the 60 s cooldown the same step counts from 2: 3 again, held.
    assert_eq!(step_scaling_decision(&c, 50.0, 60.0, &at(3, &b, &m, t0 + 30.0)), Decision::Hold(Hold::Cooldown));
    // A larger step goes ahead: 2 + 3 = 5.
    assert_eq!(
        step_scaling_decision(&c, 50.0, 120.0, &at(3, &b, &m, t0 + 30.0)),
        Decision::Scale { desired: 5, direction: Direction::Out }
    );
    // After the cooldown it counts from the current capacity, clamped to the maximum.
    assert_eq!(
        step_scaling_decision(&c, 50.0, 120.0, &at(5, &b, &m, t0 + 61.0)),
        Decision::Scale { desired: 6, direction: Direction::Out }
    );
    assert_eq!(
        step_scaling_decision(&c, 50.0, 120.0, &at(6, &b, &m, t0 + 61.0)),
        Decision::NotScaled(NotScaled::AlreadyAtMaxCapacity { max_capacity: 6 })
    );
    let exact = steps(AdjustmentType::ExactCapacity, vec![step(Some(0.0), None, 4)]);
    assert_eq!(
        step_scaling_decision(&exact, 50.0, 60.0, &at(6, &b, &PolicyMemory::default(), t0)),
        Decision::Scale { desired: 4, direction: Direction::In }
    );
    assert_eq!(
        step_scaling_decision(&exact, 50.0, 60.0, &at(4, &b, &PolicyMemory::default(), t0)),
        Decision::NotScaled(NotScaled::AlreadyAtDesiredCapacity { current_capacity: 4 })
    );
    assert_eq!(aggregate(&[1.0, 2.0, 6.0], None), Some(3.0));
    assert_eq!(aggregate(&[1.0, 2.0, 6.0], Some(&MetricAggregationType::Maximum)), Some(6.0));
    assert_eq!(aggregate(&[1.0, 2.0, 6.0], Some(&MetricAggregationType::Minimum)), Some(1.0));
    assert_eq!(aggregate(&[], None), None);
}

fn scheduled(schedule: &str, min: Option<i32>, max: Option<i32>) -> PutScheduledActionRequest {
    PutScheduledActionRequest {
        resource_id: "service/default/web-app".into(),
        scalable_dimension: ScalableDimension::EcsServiceDesiredCount,
        service_namespace: ServiceNamespace::Ecs,
        scheduled_action_name: "night".into(),
        schedule: Some(schedule.into()),
        scalable_target_action: Some(ScalableTargetAction { min_capacity: min, max_capacity: max }),
        ..Default::default()
    }
}

#[test]
fn scheduled_actions() {
    let b = bounds(2, 10);
    let a = validate_scheduled_action(&scheduled("cron(0 22 * * ? *)", Some(1), Some(3)), Some(&b)).unwrap();
    assert_eq!((a.min_capacity, a.max_capacity, a.zone), (Some(1), Some(3), Zone::UTC));
    let e = validate_scheduled_action(&scheduled("cron(0 22 * * ? *)", Some(1), Some(3)), None).unwrap_err();
    assert_eq!(e.code, ErrorCode::ObjectNotFoundException);
    for bad in [
        scheduled("cron(0 22 * * *)", Some(1), None),
        scheduled("rate(1 minutes)", Some(1), None),
        scheduled("at(2026-12-01 10:00)", Some(1), None),
        scheduled("rate(5 minutes)", None, None),
        scheduled("rate(5 minutes)", Some(5), Some(2)),
        PutScheduledActionRequest {
            timezone: Some("Nowhere/City".into()),
            ..scheduled("rate(5 minutes)", Some(1), None)
        },
        PutScheduledActionRequest {
            start_time: Some(20.0),
            end_time: Some(10.0),
            ..scheduled("rate(5 minutes)", Some(1), None)
        },
    ] {
        assert_eq!(
            validate_scheduled_action(&bad, Some(&b)).unwrap_err().code,
            ErrorCode::ValidationException,
            "{bad:?}"
        );
    }

    // Night: 1–3 tasks; the service had 6, so it comes down to 3.
    let ScheduledRun { bounds: nb, activity: act, desired: push } = run_scheduled_action("night", &a, &b, 6).unwrap();
    assert_eq!(nb, bounds(1, 3));
    assert_eq!(act.description, "Setting min capacity to 1 and max capacity to 3");
    assert_eq!(act.cause, "scheduled action name night was triggered");
    let (n, pushed) = push.unwrap();
    assert_eq!((n, pushed.cause.as_str()), (3, "maximum capacity was set to 3"));
    // Only a minimum above the current maximum lifts the maximum with it.
    let up = ScheduledAction { min_capacity: Some(12), max_capacity: None, ..a.clone() };
    let ScheduledRun { bounds: nb, desired: push, .. } = run_scheduled_action("day", &up, &b, 4).unwrap();
    assert_eq!(nb, bounds(12, 12));
    assert_eq!(push.unwrap().0, 12);
    // Suspended: nothing happens.
    let mut sb = b;
    sb.suspended.scheduled_scaling = true;
    assert_eq!(run_scheduled_action("night", &a, &sb, 6), None);
}

#[test]
fn a_whole_scale_out_from_metrics_to_activity() {
    // A service of 2 tasks burning 90 % CPU against a 50 % target: after three one-minute
    // datapoints AlarmHigh is in ALARM, the policy asks for ceil(2 × 90 / 50) = 4 tasks, and
    // the activity reads as AWS's.
    let service = web();
    let config = tt(MetricType::ECSServiceAverageCPUUtilization, None, 50.0);
    let metric = target_tracking_metric(&service, &config).unwrap();
    let action = policy_arn(&scope(), "6d8972f3-efc8-437c-92d1-6270f29a66e7", &service.resource_id(), "cpu50");
    let high =
        target_tracking_alarm(&service.resource_id(), TrackingAlarm::AlarmHigh, UUID_HIGH, &action, &metric, 50.0);
    let rule = alarms::validate_put_metric_alarm(&high).unwrap();

    let now = 1_796_119_200.0 + 245.0; // 10:04:05
    let starts = alarms::range_starts(&rule, now);
    assert_eq!(starts.len(), 5);
    let slots: Vec<alarms::Slot> = starts
        .iter()
        .enumerate()
        .map(|(i, t)| if i < 2 { alarms::Slot::missing(*t) } else { alarms::Slot::value(*t, 90.0) })
        .collect();
    let alarms::Outcome::Set(update) = alarms::evaluate(&rule, &slots, now) else { panic!() };
    assert_eq!(update.state, cw::StateValue::Alarm);
    assert!(update.reason.starts_with("Threshold Crossed: 3 out of the last 3 datapoints [90.0 (01/12/26 10:03:00)"));
    assert!(update.reason.ends_with("(minimum 3 datapoints for OK -> ALARM transition)."));
    assert!(alarms::invokes_action(cw::StateValue::Ok, update.state, &action));

    let policy = TargetTracking::from_config(&config);
    assert_eq!(policy.cooldowns, Cooldowns { scale_out: 300, scale_in: 300 });
    let b = bounds(1, 10);
    let memory = PolicyMemory::default();
    let decision = policy.decide(TrackingAlarm::AlarmHigh, 90.0, &at(2, &b, &memory, now));
    assert_eq!(decision, Decision::Scale { desired: 4, direction: Direction::Out });
    let activity = Activity::desired_count_set(4, alarm_cause(&high.alarm_name, "cpu50"));
    assert_eq!(activity.description, "Setting desired count to 4.");
    assert_eq!(
        activity.cause,
        "monitor alarm TargetTracking-service/default/web-app-AlarmHigh-22c1fbb2-aed5-484d-9cc2-131ed021b611 in state ALARM triggered policy cpu50"
    );
}

#[test]
fn decisions_and_outcomes_round_trip_as_json() {
    for d in [
        Decision::Scale { desired: 4, direction: Direction::Out },
        Decision::NotScaled(NotScaled::AlreadyAtMaxCapacity { max_capacity: 4 }),
        Decision::Hold(Hold::Cooldown),
    ] {
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d, "{json}");
    }
    let json = serde_json::to_value(Decision::NotScaled(NotScaled::AlreadyAtMinCapacity { min_capacity: 1 })).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"decision": "notScaled", "detail": {"code": "alreadyAtMinCapacity", "minCapacity": 1}})
    );
    let rule = alarms::AlarmRule {
        threshold: 1.0,
        comparison_operator: ComparisonOperator::GreaterThanThreshold,
        evaluation_periods: 1,
        datapoints_to_alarm: None,
        treat_missing_data: alarms::TreatMissingData::Ignore,
        period: 60,
        statistic: Some("Sum".into()),
        unit: None,
    };
    let tracked = target_tracking_metric(&web(), &tt(MetricType::ECSServiceAverageCPUUtilization, None, 50.0)).unwrap();
    let json = serde_json::to_value(&tracked).unwrap();
    assert_eq!(json["metricName"], "CPUUtilization");
    assert_eq!(serde_json::from_value::<TrackedMetric>(json).unwrap(), tracked);
    let back: alarms::AlarmRule = serde_json::from_str(&serde_json::to_string(&rule).unwrap()).unwrap();
    assert_eq!(back, rule);
    for o in [alarms::Outcome::Retain, alarms::evaluate(&rule, &[alarms::Slot::value(0.0, 2.0)], 60.0)] {
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<alarms::Outcome>(&json).unwrap(), o, "{json}");
    }
}
