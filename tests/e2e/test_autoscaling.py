"""Application Auto Scaling for ECS services: scalable targets, their bounds moving the
desired count, target tracking policies and the alarms they own, step scaling fired by an
alarm, scheduled actions, scaling activities, tags, and the error paths with AWS's codes
and messages. Control plane only: the shared server runs no tasks (desired counts are
checked through DescribeServices)."""

import datetime
import re
import time

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, error_code, error_message, register_fargate, unique, wait_until

DIM = "ecs:service:DesiredCount"


@pytest.fixture
def aas(shared):
    return shared.client("application-autoscaling")


@pytest.fixture
def svc(ecs):
    """A cluster with one service (desired count 2) and its resource id."""
    cluster, fam = unique("c"), unique("f")
    ecs.create_cluster(clusterName=cluster)
    register_fargate(ecs, fam)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=fam, desiredCount=2, networkConfiguration=AWSVPC)
    return cluster, "web", f"service/{cluster}/web"


def desired(ecs, cluster, service):
    return ecs.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]


def register(aas, rid, lo, hi, **kw):
    return aas.register_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid,
                                        MinCapacity=lo, MaxCapacity=hi, **kw)


def activities(aas, rid, **kw):
    return aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid, **kw)["ScalingActivities"]


def test_register_describe_deregister(aas, svc, shared):
    _, _, rid = svc
    arn = register(aas, rid, 1, 5)["ScalableTargetARN"]
    assert re.fullmatch(r"arn:aws:application-autoscaling:us-east-1:\d{12}:scalable-target/[0-9a-f]{32}", arn)
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"], t["ScalableDimension"], t["ServiceNamespace"]) == (1, 5, DIM, "ecs")
    assert t["ScalableTargetARN"] == arn
    assert t["RoleARN"].endswith(":role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService")
    assert t["SuspendedState"] == {"DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False, "ScheduledScalingSuspended": False}
    # Re-registering updates what it names and keeps the rest (and the ARN).
    again = aas.register_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, MaxCapacity=8,
                                         SuspendedState={"DynamicScalingInSuspended": True})
    assert again["ScalableTargetARN"] == arn
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (1, 8)
    assert t["SuspendedState"]["DynamicScalingInSuspended"] is True
    # The AWS CLI sees the same target.
    out = shared.aws("application-autoscaling", "describe-scalable-targets", "--service-namespace", "ecs",
                     "--resource-ids", rid)
    assert [x["ResourceId"] for x in out["ScalableTargets"]] == [rid]
    # Other namespaces list nothing.
    assert aas.describe_scalable_targets(ServiceNamespace="dynamodb")["ScalableTargets"] == []
    aas.deregister_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid)
    assert aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"] == []
    with pytest.raises(ClientError) as e:
        aas.deregister_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid)
    assert error_code(e) == "ObjectNotFoundException"
    assert error_message(e) == f"No scalable target registered for service namespace: ecs, resource ID: {rid}, scalable dimension: {DIM}"


def test_register_errors(aas, svc, shared):
    cluster, _, rid = svc
    with pytest.raises(ClientError) as e:
        register(aas, f"service/{cluster}/nope", 1, 2)
    assert error_code(e) == "ValidationException"
    assert error_message(e) == f"ECS service doesn't exist: service/{cluster}/nope"
    with pytest.raises(ClientError) as e:
        aas.register_scalable_target(ServiceNamespace="dynamodb", ScalableDimension="dynamodb:table:ReadCapacityUnits",
                                     ResourceId="table/t", MinCapacity=1, MaxCapacity=2)
    assert error_code(e) == "ValidationException"
    assert "ecs:service:DesiredCount" in error_message(e)
    with pytest.raises(ClientError) as e:
        register(aas, "service/only-two", 1, 2)
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        aas.register_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, MinCapacity=1)
    assert error_code(e) == "ValidationException"
    assert "MinCapacity and MaxCapacity are required" in error_message(e)
    with pytest.raises(ClientError) as e:
        register(aas, rid, 4, 2)
    assert error_code(e) == "ValidationException"
    assert error_message(e) == "Minimum capacity (4) cannot be greater than maximum capacity (2)"
    # Nothing was written by the refused calls.
    assert aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"] == []
    p = shared.aws("application-autoscaling", "register-scalable-target", "--service-namespace", "ecs",
                   "--scalable-dimension", DIM, "--resource-id", f"service/{cluster}/nope",
                   "--min-capacity", "1", "--max-capacity", "2", check=False)
    assert p.returncode != 0 and "ValidationException" in p.stderr and "ECS service doesn't exist" in p.stderr


def test_bounds_move_the_desired_count(aas, ecs, svc):
    cluster, name, rid = svc
    assert desired(ecs, cluster, name) == 2
    register(aas, rid, 0, 1)
    assert desired(ecs, cluster, name) == 1
    [a] = activities(aas, rid)
    assert a["Description"] == "Setting desired count to 1."
    assert a["Cause"] == "maximum capacity was set to 1"
    assert a["StatusCode"] == "Successful"
    assert a["StatusMessage"] == "Successfully set desired count to 1. Change successfully fulfilled by ecs."
    register(aas, rid, 3, 6)
    assert desired(ecs, cluster, name) == 3
    acts = activities(aas, rid)
    assert [x["Description"] for x in acts] == ["Setting desired count to 3.", "Setting desired count to 1."]
    assert acts[0]["Cause"] == "minimum capacity was set to 3"
    # Within the bounds: nothing moves, nothing is recorded.
    register(aas, rid, 2, 6)
    assert desired(ecs, cluster, name) == 3
    assert len(activities(aas, rid)) == 2
    # Paging, newest first.
    first = aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid, MaxResults=1)
    assert first["ScalingActivities"][0]["Description"] == "Setting desired count to 3."
    second = aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid, MaxResults=1, NextToken=first["NextToken"])
    assert second["ScalingActivities"][0]["Description"] == "Setting desired count to 1."
    assert "NextToken" not in second
    with pytest.raises(ClientError) as e:
        aas.describe_scaling_activities(ServiceNamespace="ecs", NextToken="!!not-a-token!!")
    assert error_code(e) == "InvalidNextTokenException"


TT_CPU = {"TargetValue": 50.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
          "ScaleOutCooldown": 60, "ScaleInCooldown": 120}


def put_tt(aas, rid, name="cpu", config=TT_CPU):
    return aas.put_scaling_policy(PolicyName=name, ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
                                  PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=config)


def test_target_tracking_policy(aas, svc):
    cluster, name, rid = svc
    register(aas, rid, 1, 4)
    out = put_tt(aas, rid)
    assert re.fullmatch(rf"arn:aws:autoscaling:us-east-1:\d{{12}}:scalingPolicy:[0-9a-f-]{{36}}:resource/ecs/{rid}:policyName/cpu", out["PolicyARN"])
    names = sorted(a["AlarmName"] for a in out["Alarms"])
    assert len(names) == 2
    assert re.fullmatch(rf"TargetTracking-{rid}-AlarmHigh-[0-9a-f-]{{36}}", names[0])
    assert re.fullmatch(rf"TargetTracking-{rid}-AlarmLow-[0-9a-f-]{{36}}", names[1])
    assert all(a["AlarmARN"] == f"arn:aws:cloudwatch:us-east-1:{a['AlarmARN'].split(':')[4]}:alarm:{a['AlarmName']}" for a in out["Alarms"])
    [p] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
    assert p["PolicyARN"] == out["PolicyARN"] and p["PolicyType"] == "TargetTrackingScaling"
    assert p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 50.0
    assert p["TargetTrackingScalingPolicyConfiguration"]["ScaleInCooldown"] == 120
    assert sorted(a["AlarmName"] for a in p["Alarms"]) == names
    # Updating keeps the ARN and the alarms.
    again = put_tt(aas, rid, config=dict(TT_CPU, TargetValue=70.0))
    assert again["PolicyARN"] == out["PolicyARN"]
    assert sorted(a["AlarmName"] for a in again["Alarms"]) == names
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", PolicyNames=["cpu"], ResourceId=rid)["ScalingPolicies"][0][
        "TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 70.0
    aas.delete_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"] == []


def test_target_tracking_alarms_in_cloudwatch(aas, svc, shared):
    """Needs the CloudWatch API (DescribeAlarms over the stored alarms)."""
    cluster, name, rid = svc
    cw = shared.client("cloudwatch")
    register(aas, rid, 1, 4)
    out = put_tt(aas, rid)
    names = [a["AlarmName"] for a in out["Alarms"]]
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    assert set(alarms) == set(names)
    high = next(a for n, a in alarms.items() if "-AlarmHigh-" in n)
    low = next(a for n, a in alarms.items() if "-AlarmLow-" in n)
    assert (high["Namespace"], high["MetricName"], high["Statistic"]) == ("AWS/ECS", "CPUUtilization", "Average")
    assert {d["Name"]: d["Value"] for d in high["Dimensions"]} == {"ClusterName": cluster, "ServiceName": name}
    assert (high["ComparisonOperator"], high["Threshold"], high["EvaluationPeriods"], high["Period"]) == ("GreaterThanThreshold", 50.0, 3, 60)
    assert (low["ComparisonOperator"], low["Threshold"], low["EvaluationPeriods"]) == ("LessThanThreshold", 45.0, 15)
    assert high["AlarmActions"] == [out["PolicyARN"]]
    assert high["AlarmDescription"].startswith("DO NOT EDIT OR DELETE. For TargetTrackingScaling policy ")
    # Deleting the policy deletes its alarms; deregistering the target deletes what is left.
    aas.delete_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    assert cw.describe_alarms(AlarmNames=names)["MetricAlarms"] == []
    out = put_tt(aas, rid, name="again")
    aas.deregister_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid)
    assert cw.describe_alarms(AlarmNames=[a["AlarmName"] for a in out["Alarms"]])["MetricAlarms"] == []


def test_step_scaling_fired_by_an_alarm(aas, ecs, svc, shared):
    """Needs the CloudWatch API (PutMetricAlarm, SetAlarmState and the alarm controller
    invoking scaling::alarm_action)."""
    cluster, name, rid = svc
    cw = shared.client("cloudwatch")
    register(aas, rid, 1, 10)
    arn = aas.put_scaling_policy(
        PolicyName="step-out", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 600,
                                        "MetricAggregationType": "Average",
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 3}]},
    )["PolicyARN"]
    # Step scaling owns no alarms: PutScalingPolicy answers none.
    again = aas.put_scaling_policy(
        PolicyName="step-out", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM, PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "Cooldown": 600,
                                        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 3}]},
    )
    assert again["PolicyARN"] == arn and "Alarms" not in again
    alarm = unique("high-cpu")
    cw.put_metric_alarm(AlarmName=alarm, Namespace="AWS/ECS", MetricName="CPUUtilization", Statistic="Average",
                        Dimensions=[{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": name}],
                        Period=60, EvaluationPeriods=1, Threshold=80.0, ComparisonOperator="GreaterThanThreshold",
                        AlarmActions=[arn])
    [p] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid, PolicyNames=["step-out"])["ScalingPolicies"]
    assert [a["AlarmName"] for a in p["Alarms"]] == [alarm]
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    wait_until(lambda: desired(ecs, cluster, name) == 5, timeout=30, what="the step to add 3 tasks")
    a = activities(aas, rid)[0]
    assert a["Description"] == "Setting desired count to 5."
    assert a["Cause"] == f"monitor alarm {alarm} in state ALARM triggered policy step-out"
    assert a["StatusCode"] == "Successful"
    # The 600 s cooldown holds further scale-outs at this count.
    time.sleep(2)
    assert desired(ecs, cluster, name) == 5


def test_scheduled_action_sets_capacity(aas, ecs, svc, shared):
    cluster, name, rid = svc
    register(aas, rid, 0, 3)
    at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")
    aas.put_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="morning",
                             Schedule=f"at({at})", ScalableTargetAction={"MinCapacity": 4, "MaxCapacity": 6})
    [a] = aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=rid)["ScheduledActions"]
    assert a["Schedule"] == f"at({at})" and a["ScalableTargetAction"] == {"MinCapacity": 4, "MaxCapacity": 6}
    assert re.fullmatch(rf"arn:aws:autoscaling:us-east-1:\d{{12}}:scheduledAction:[0-9a-f-]{{36}}:resource/ecs/{rid}:scheduledActionName/morning",
                        a["ScheduledActionARN"])
    assert desired(ecs, cluster, name) == 2
    wait_until(lambda: desired(ecs, cluster, name) == 4, timeout=20, what="the scheduled action")
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (4, 6)
    acts = activities(aas, rid)
    assert acts[0]["Description"] == "Setting desired count to 4."
    assert acts[1]["Description"] == "Setting min capacity to 4 and max capacity to 6"
    assert acts[1]["Cause"] == "scheduled action name morning was triggered"
    # It ran once.
    time.sleep(1.5)
    assert len(activities(aas, rid)) == 2
    # A recurring action through the CLI, then deleted.
    shared.aws("application-autoscaling", "put-scheduled-action", "--service-namespace", "ecs",
               "--scalable-dimension", DIM, "--resource-id", rid, "--scheduled-action-name", "weekdays",
               "--schedule", "cron(0 18 ? * MON-FRI *)", "--timezone", "America/New_York",
               "--scalable-target-action", "MinCapacity=1,MaxCapacity=2")
    out = shared.aws("application-autoscaling", "describe-scheduled-actions", "--service-namespace", "ecs",
                     "--resource-id", rid, "--scheduled-action-names", "weekdays")
    assert out["ScheduledActions"][0]["Timezone"] == "America/New_York"
    aas.delete_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="weekdays")
    assert [x["ScheduledActionName"] for x in aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=rid)["ScheduledActions"]] == ["morning"]


def test_policy_and_schedule_errors(aas, svc):
    _, _, rid = svc
    with pytest.raises(ClientError) as e:
        put_tt(aas, rid)
    assert error_code(e) == "ObjectNotFoundException"
    assert error_message(e) == f"No scalable target registered for service namespace: ecs, resource ID: {rid}, scalable dimension: {DIM}"
    register(aas, rid, 1, 3)
    with pytest.raises(ClientError) as e:
        aas.delete_scaling_policy(PolicyName="nope", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
    assert error_code(e) == "ObjectNotFoundException"
    assert error_message(e) == f"No scaling policy found for service namespace: ecs, resource ID: {rid}, scalable dimension: {DIM}, policy name: nope"
    with pytest.raises(ClientError) as e:
        aas.delete_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="nope")
    assert error_code(e) == "ObjectNotFoundException"
    assert error_message(e) == f"No scheduled action found for service namespace: ecs, resource ID: {rid}, scalable dimension: {DIM}, scheduled action name: nope"
    with pytest.raises(ClientError) as e:
        put_tt(aas, rid, config={"TargetValue": 50.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ALBRequestCountPerTarget"}})
    assert error_code(e) == "ValidationException" and "ResourceLabel" in error_message(e)
    with pytest.raises(ClientError) as e:
        put_tt(aas, rid, config={"TargetValue": 50.0})
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="s", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM, PolicyType="StepScaling",
                               StepScalingPolicyConfiguration={"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [
                                   {"MetricIntervalLowerBound": 0.0, "MetricIntervalUpperBound": 10.0, "ScalingAdjustment": 1}]})
    assert error_code(e) == "ValidationException" and "unspecified upper bound" in error_message(e)
    with pytest.raises(ClientError) as e:
        aas.put_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="x",
                                 Schedule="every day", ScalableTargetAction={"MinCapacity": 1})
    assert error_code(e) == "ValidationException" and "every day" in error_message(e)
    with pytest.raises(ClientError) as e:
        aas.put_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="x",
                                 Schedule="rate(5 minutes)", Timezone="Mars/Olympus", ScalableTargetAction={"MinCapacity": 1})
    assert error_code(e) == "ValidationException" and "Mars/Olympus" in error_message(e)
    # Nothing was written.
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"] == []
    assert aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=rid)["ScheduledActions"] == []


def test_ALB_and_customized_metrics(aas, svc):
    _, _, rid = svc
    register(aas, rid, 1, 3)
    label = "app/my-alb/0123456789abcdef/targetgroup/my-tg/fedcba9876543210"
    put_tt(aas, rid, name="alb", config={"TargetValue": 100.0, "PredefinedMetricSpecification": {
        "PredefinedMetricType": "ALBRequestCountPerTarget", "ResourceLabel": label}})
    put_tt(aas, rid, name="custom", config={"TargetValue": 10.0, "DisableScaleIn": True, "CustomizedMetricSpecification": {
        "MetricName": "QueueDepth", "Namespace": "MyApp", "Statistic": "Average",
        "Dimensions": [{"Name": "Queue", "Value": "jobs"}]}})
    policies = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
    assert sorted(p["PolicyName"] for p in policies) == ["alb", "custom"]
    page = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid, MaxResults=1)
    assert len(page["ScalingPolicies"]) == 1 and "NextToken" in page


def test_deregister_removes_policies_and_actions(aas, svc):
    _, _, rid = svc
    register(aas, rid, 1, 3)
    put_tt(aas, rid)
    aas.put_scheduled_action(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid, ScheduledActionName="later",
                             Schedule="rate(1 day)", ScalableTargetAction={"MaxCapacity": 5})
    aas.deregister_scalable_target(ServiceNamespace="ecs", ScalableDimension=DIM, ResourceId=rid)
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"] == []
    assert aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=rid)["ScheduledActions"] == []


def test_tags(aas, svc):
    _, _, rid = svc
    arn = register(aas, rid, 1, 3, Tags={"team": "web"})["ScalableTargetARN"]
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"team": "web"}
    aas.tag_resource(ResourceARN=arn, Tags={"env": "prod"})
    aas.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert aas.list_tags_for_resource(ResourceARN=arn)["Tags"] == {"env": "prod"}
    missing = arn[:-32] + "0" * 32
    with pytest.raises(ClientError) as e:
        aas.list_tags_for_resource(ResourceARN=missing)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        aas.tag_resource(ResourceARN=arn, Tags={f"k{i}": "v" for i in range(60)})
    assert error_code(e) == "TooManyTagsException"
