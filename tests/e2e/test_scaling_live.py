"""Autoscaling end to end, from real cgroups: CPU-burning tasks (`cpu` 256, so a quarter of a
core by CFS quota) measured by the agent, `AWS/ECS` CPUUtilization read back with
GetMetricStatistics, and a target-tracking policy at 50 % that grows a service to its maximum
while its tasks burn and shrinks it back once they stop, no faster than the scale-in cooldown.
The server runs with `--metric-period 5s`: one AWS minute of metrics lasts 5 s, while every
API keeps AWS's numbers (Period 60, cooldowns in AWS seconds).

Needs root, and runs only inside a network namespace with no route out (`cargo xtask test`
runs the suite in one), since tasks get network namespaces of their own."""

import os
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import isolated, running_node, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
PERIOD = 5  # real seconds per AWS minute
BURN = ["sh", "-c", "while :; do :; done"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # Burners left by a failed test would outlive the server and slow every later test: the
    # node drains them on the way out.
    with running_node(tmp_path_factory, "--metric-period", f"{PERIOD}s") as e:
        yield e


def service(ecs, cluster, image, command, desired=1):
    fam = unique("burn")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": image, "essential": True, "command": command}],
    )
    name = unique("svc")
    ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=fam, desiredCount=desired,
                       launchType="FARGATE", networkConfiguration=NET)
    return name


def running(ecs, cluster, name):
    s = ecs.describe_services(cluster=cluster, services=[name])["services"][0]
    return s["runningCount"], s["desiredCount"]


def stats(cw, cluster, name, metric, minutes=10):
    now = datetime.now(timezone.utc)
    r = cw.get_metric_statistics(
        Namespace="AWS/ECS", MetricName=metric,
        Dimensions=[{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": name}],
        # In AWS time a real second is 12 s: ten AWS minutes back is 50 real seconds.
        StartTime=now - timedelta(seconds=minutes * PERIOD), EndTime=now + timedelta(seconds=PERIOD),
        Period=60, Statistics=["Average", "Maximum", "SampleCount"],
    )
    return sorted(r["Datapoints"], key=lambda d: d["Timestamp"])


def test_cpu_utilization_is_what_a_burner_causes(node, busybox):
    ecs, cw = node.client(), node.client("cloudwatch")
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    name = service(ecs, cluster, busybox, BURN)
    wait_until(lambda: running(ecs, cluster, name)[0] == 1, timeout=60, what="the burner running")
    # Whole AWS minutes of burning, between the first (the task started in it) and the one
    # still being filled.
    def whole():
        d = stats(cw, cluster, name, "CPUUtilization")
        return len(d) >= 4 and d[1:-1]
    inner = wait_until(whole, timeout=60, interval=1, what="four minutes of CPUUtilization")
    # A quarter of a core burnt of a quarter reserved: 100 %.
    for d in inner:
        assert 85 <= d["Average"] <= 105, inner
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="AWS/ECS", Dimensions=[{"Name": "ServiceName", "Value": name}])["Metrics"]}
    assert {"CPUUtilization", "MemoryUtilization"} <= names
    mem = stats(cw, cluster, name, "MemoryUtilization")
    assert mem and all(0 < d["Average"] < 100 for d in mem), mem
    ecs.delete_service(cluster=cluster, service=name, force=True)


def test_target_tracking_grows_to_the_maximum_and_shrinks_back(node, busybox):
    ecs, aas, cw = node.client(), node.client("application-autoscaling"), node.client("cloudwatch")
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    # Each task burns for 40 s from its start, then idles.
    name = service(ecs, cluster, busybox, ["sh", "-c", "timeout 40 sh -c 'while :; do :; done'; exec sleep 100000"])
    rid = f"service/{cluster}/{name}"
    target = dict(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount")
    aas.register_scalable_target(MinCapacity=1, MaxCapacity=3, **target)
    scale_in_cooldown = 120  # AWS seconds: 10 real seconds
    p = aas.put_scaling_policy(
        PolicyName="cpu50", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 50.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            "ScaleOutCooldown": 60, "ScaleInCooldown": scale_in_cooldown,
        },
        **target,
    )
    alarms = [a["AlarmName"] for a in p["Alarms"]]
    assert len(alarms) == 2
    prefix = re.escape(f"TargetTracking-{rid}")
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert any(re.fullmatch(f"{prefix}-AlarmHigh-{uuid}", a) for a in alarms), alarms
    assert any(re.fullmatch(f"{prefix}-AlarmLow-{uuid}", a) for a in alarms), alarms
    described = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=alarms)["MetricAlarms"]}
    assert set(described) == set(alarms)
    high = next(a for n, a in described.items() if "AlarmHigh" in n)
    assert (high["MetricName"], high["Namespace"], high["Period"], high["EvaluationPeriods"], high["Threshold"]) == \
        ("CPUUtilization", "AWS/ECS", 60, 3, 50.0)
    assert high["ComparisonOperator"] == "GreaterThanThreshold"
    assert high["AlarmActions"] == [p["PolicyARN"]]

    # Out: while the tasks burn, the service grows to its maximum.
    wait_until(lambda: running(ecs, cluster, name) == (3, 3), timeout=120, interval=1, what="the service scaled out to 3")
    acts = aas.describe_scaling_activities(**{k: target[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")})["ScalingActivities"]
    outs = [a for a in acts if a["Description"].startswith("Setting desired count to") and a["StatusCode"] == "Successful"]
    assert outs, acts
    assert any(re.search(r"monitor alarm TargetTracking-.*-AlarmHigh-.* in state ALARM triggered policy cpu50", a["Cause"]) for a in outs), outs

    # In: once every task has stopped burning, the service shrinks back to its minimum.
    wait_until(lambda: running(ecs, cluster, name)[1] == 1, timeout=240, interval=1, what="the service scaled in to 1")
    acts = aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount")["ScalingActivities"]
    ins = sorted((a for a in acts if "AlarmLow" in a["Cause"] and a["StatusCode"] == "Successful"), key=lambda a: a["StartTime"])
    assert ins, acts
    last_out = max(a["StartTime"] for a in outs)
    for a, b in zip(ins, ins[1:]):
        assert (b["StartTime"] - a["StartTime"]).total_seconds() >= scale_in_cooldown * PERIOD / 60 - 0.5, ins
    assert ins[0]["StartTime"] > last_out
    # It stays there: idle tasks do not bring it back up.
    time.sleep(3 * PERIOD)
    assert running(ecs, cluster, name)[1] == 1
    aas.deregister_scalable_target(**target)
    assert cw.describe_alarms(AlarmNames=alarms)["MetricAlarms"] == []
    ecs.delete_service(cluster=cluster, service=name, force=True)
