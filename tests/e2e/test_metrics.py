"""Metrics measured from real cgroups: a service of CPU-burning busybox tasks (`cpu` 256, a CFS
quota of a quarter of a core) on a server whose AWS minute lasts 5 seconds
(`--metric-period 5s`), read back with boto3's GetMetricStatistics as AWS/ECS
`CPUUtilization` / `MemoryUtilization` and, with Container Insights on, as
`ECS/ContainerInsights` metrics. The expected utilisation is not assumed: the test reads the
task's own cgroup CPU counter over the same window and compares.

Needs root and the CloudWatch API (GetMetricStatistics); runs only inside a network namespace
with no route out (`unshare --net`), since tasks get network namespaces of their own."""

import os
import time
from datetime import datetime, timezone

import pytest

import images as img
from conftest import isolated, running_node, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

PERIOD = 5  # real seconds per AWS minute
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory, "--metric-period", f"{PERIOD}s", "--metrics-interval", "1s") as e:
        yield e


@pytest.fixture(scope="module")
def busybox(node):
    """busybox, pushed to the server's own registry."""
    node.client("ecr").create_repository(repositoryName="busybox")
    return img.busybox_image(img.Registry(node.endpoint), "busybox", "latest")


def cpu_usage_ns(task_id):
    """The task cgroup's CPU time, read the way the kernel keeps it (v1/hybrid or v2)."""
    for path, scale in ((f"/sys/fs/cgroup/cpuacct/estiba/{task_id}/cpuacct.usage", 1),
                        (f"/sys/fs/cgroup/cpu,cpuacct/estiba/{task_id}/cpuacct.usage", 1)):
        if os.path.exists(path):
            with open(path) as f:
                return int(f.read()) * scale
    with open(f"/sys/fs/cgroup/estiba/{task_id}/cpu.stat") as f:
        usage = dict(line.split() for line in f)
    return int(usage["usage_usec"]) * 1000


def stats(cw, ns, name, dims, start, end, statistics=("Average", "SampleCount", "Minimum", "Maximum", "Sum")):
    r = cw.get_metric_statistics(Namespace=ns, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims],
                                 StartTime=start, EndTime=end, Period=60, Statistics=list(statistics))
    return sorted(r["Datapoints"], key=lambda d: d["Timestamp"])


def burner_service(ecs, busybox, cluster, count=1):
    fam = unique("burn")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "burn", "image": busybox, "cpu": 256,
                               "command": ["sh", "-c", "while :; do :; done"]}])
    svc = unique("svc")
    ecs.create_service(cluster=cluster, serviceName=svc, taskDefinition=fam, desiredCount=count,
                       launchType="FARGATE", networkConfiguration=NET)

    def running():
        arns = ecs.list_tasks(cluster=cluster, serviceName=svc, desiredStatus="RUNNING")["taskArns"]
        if len(arns) != count:
            return None
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
        return all(t["lastStatus"] == "RUNNING" for t in tasks) and arns
    arns = wait_until(running, timeout=60, interval=0.5, what="the burner tasks RUNNING")
    return fam, svc, [a.rsplit("/", 1)[1] for a in arns]


def test_cpu_utilization_is_what_the_burner_really_uses(node, busybox):
    ecs, cw = node.client(), node.client("cloudwatch")
    cluster = unique("metrics")
    ecs.create_cluster(clusterName=cluster, settings=[{"name": "containerInsights", "value": "enabled"}])
    fam, svc, [task_id] = burner_service(ecs, busybox, cluster)
    # Let the first samples arrive, then measure over 8 AWS minutes.
    time.sleep(2 * PERIOD)
    start, used0 = time.time(), cpu_usage_ns(task_id)
    time.sleep(8 * PERIOD)
    end, used1 = time.time(), cpu_usage_ns(task_id)
    # What the burner really used, as a percentage of its 256 units (a quarter of a core).
    real = (used1 - used0) / ((end - start) * 1e9) / 0.25 * 100
    assert real > 30, f"the burner hardly ran ({real:.1f} % of its quarter core): the machine is too busy"
    # Minutes that are wholly inside the window, once written (a grace after each one).
    t0 = datetime.fromtimestamp(start + PERIOD, timezone.utc)
    t1 = datetime.fromtimestamp(end - PERIOD, timezone.utc)
    time.sleep(PERIOD)
    by_service = [("ClusterName", cluster), ("ServiceName", svc)]
    points = wait_until(lambda: (p := stats(cw, "AWS/ECS", "CPUUtilization", by_service, t0, t1)) and len(p) >= 4 and p,
                        timeout=6 * PERIOD, interval=0.5, what="CPUUtilization datapoints")
    measured = sum(p["Average"] for p in points) / len(points)
    assert abs(measured - real) <= 5, f"CPUUtilization {measured:.1f} % vs {real:.1f} % measured from the cgroup: {points}"
    for p in points:
        assert p["Unit"] == "Percent" and p["SampleCount"] == 1.0, p
        assert p["Minimum"] == p["Maximum"] == p["Average"], p
    # The cluster's metric covers the same task.
    by_cluster = stats(cw, "AWS/ECS", "CPUUtilization", [("ClusterName", cluster)], t0, t1)
    assert abs(sum(p["Average"] for p in by_cluster) / len(by_cluster) - real) <= 5, by_cluster
    # Memory: the shell uses some of its 512 MiB, far from all.
    mem = stats(cw, "AWS/ECS", "MemoryUtilization", by_service, t0, t1)
    assert mem and all(0 < p["Average"] < 20 and p["Unit"] == "Percent" for p in mem), mem
    # Container Insights (on for this cluster): CPU units used and reserved, task counts.
    used = stats(cw, "ECS/ContainerInsights", "CpuUtilized", by_service, t0, t1)
    assert abs(sum(p["Average"] for p in used) / len(used) - real * 256 / 100) <= 13, used
    reserved = stats(cw, "ECS/ContainerInsights", "CpuReserved", [("ClusterName", cluster), ("TaskDefinitionFamily", fam)], t0, t1)
    assert reserved and all(p["Average"] == 256.0 for p in reserved), reserved
    mem_reserved = stats(cw, "ECS/ContainerInsights", "MemoryReserved", [("ClusterName", cluster)], t0, t1)
    assert mem_reserved and all(p["Average"] == 512.0 and p["Unit"] == "Megabytes" for p in mem_reserved), mem_reserved
    running = stats(cw, "ECS/ContainerInsights", "RunningTaskCount", by_service, t0, t1)
    assert running and all(p["Average"] == 1.0 for p in running), running
    desired = stats(cw, "ECS/ContainerInsights", "DesiredTaskCount", by_service, t0, t1)
    assert desired and all(p["Average"] == 1.0 for p in desired), desired
    # ListMetrics knows the dimension sets AWS uses.
    listed = cw.list_metrics(Namespace="AWS/ECS", MetricName="CPUUtilization",
                             Dimensions=[{"Name": "ClusterName", "Value": cluster}])["Metrics"]
    assert sorted(sorted(d["Name"] for d in m["Dimensions"]) for m in listed) == [["ClusterName"], ["ClusterName", "ServiceName"]]
    ecs.delete_service(cluster=cluster, service=svc, force=True)


def test_without_container_insights_only_aws_ecs(node, busybox):
    ecs, cw = node.client(), node.client("cloudwatch")
    cluster = unique("plain")
    ecs.create_cluster(clusterName=cluster)
    _, svc, _ = burner_service(ecs, busybox, cluster)
    start = datetime.fromtimestamp(time.time(), timezone.utc)
    by_service = [("ClusterName", cluster), ("ServiceName", svc)]
    end = lambda: datetime.fromtimestamp(time.time() + PERIOD, timezone.utc)
    wait_until(lambda: stats(cw, "AWS/ECS", "CPUUtilization", by_service, start, end()),
               timeout=8 * PERIOD, interval=0.5, what="CPUUtilization datapoints")
    assert cw.list_metrics(Namespace="ECS/ContainerInsights",
                           Dimensions=[{"Name": "ClusterName", "Value": cluster}])["Metrics"] == []
    ecs.delete_service(cluster=cluster, service=svc, force=True)


@pytest.fixture
def alb_node(tmp_path):
    from test_network import Node, own_netns
    with own_netns():
        n = Node(tmp_path, extra_args=["--metric-period", f"{PERIOD}s", "--metrics-interval", "1s"])
        try:
            yield n
        finally:
            n.stop_all()


def test_application_load_balancer_metrics(alb_node):
    from test_lb import HTTPD, alb, fetch, healthy_targets, lb_address, running, target_group
    from test_network import NET
    node = alb_node
    ecs, elb, cw = node.ecs, node.e.client("elbv2"), node.e.client("cloudwatch")
    lb = alb(node)
    tg = target_group(node, "web")
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD], "portMappings": [{"containerPort": 8080}]}])
    ecs.create_service(cluster="default", serviceName="web", taskDefinition=fam, desiredCount=2, launchType="FARGATE",
                       networkConfiguration=NET, healthCheckGracePeriodSeconds=0,
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}])
    wait_until(lambda: len(running(ecs, "web")) == 2, timeout=60, what="2 web tasks")
    wait_until(lambda: len(healthy_targets(node, tg)) == 2, timeout=40, what="2 healthy targets")
    ip = lb_address(lb)
    start = datetime.fromtimestamp(time.time() - PERIOD, timezone.utc)
    n = 60
    statuses = [fetch(f"http://{ip}/")[0] for _ in range(n)] + [fetch(f"http://{ip}/missing")[0] for _ in range(5)]
    assert statuses == [200] * n + [404] * 5, statuses
    lb_dim = "app/web/" + lb["LoadBalancerArn"].rsplit("/", 1)[1]
    tg_dim = "targetgroup/web/" + tg.rsplit("/", 1)[1]

    def points(name, dims, stat):
        end = datetime.fromtimestamp(time.time() + PERIOD, timezone.utc)
        return [p[stat] for p in stats(cw, "AWS/ApplicationELB", name, dims, start, end, statistics=(stat,))]

    def total(name, dims, stat="Sum"):
        return sum(points(name, dims, stat))
    # Every request, counted once, whatever minutes they were spread over (rounding aside).
    got = wait_until(lambda: (t := total("RequestCount", [("LoadBalancer", lb_dim)])) >= n + 5 - 2 and t,
                     timeout=8 * PERIOD, interval=0.5, what="RequestCount")
    time.sleep(2 * PERIOD)
    got = total("RequestCount", [("LoadBalancer", lb_dim)])
    assert abs(got - (n + 5)) <= 2, got
    both = [("LoadBalancer", lb_dim), ("TargetGroup", tg_dim)]
    assert abs(total("RequestCount", both) - (n + 5)) <= 2
    assert abs(total("HTTPCode_Target_2XX_Count", both) - n) <= 2
    assert abs(total("HTTPCode_Target_4XX_Count", both) - 5) <= 2
    # Per target: the requests over the 2 healthy targets.
    assert abs(total("RequestCountPerTarget", [("TargetGroup", tg_dim)]) - (n + 5) / 2) <= 2
    healthy = points("HealthyHostCount", both, "Maximum")
    # (The window starts a minute before the requests, when targets may still have been
    # initial: the count only grows, to both.)
    assert healthy and healthy[-1] == 2.0 and set(healthy) <= {0.0, 1.0, 2.0}, healthy
    assert healthy == sorted(healthy), healthy
    assert set(points("UnHealthyHostCount", both, "Maximum")) == {0.0}
    assert total("TargetResponseTime", both, "SampleCount") >= n + 5 - 2
    ecs.delete_service(cluster="default", service="web", force=True)


def test_task_metadata_endpoint_answers_from_inside_the_task(node, busybox):
    import json
    import subprocess
    from conftest import BIN
    ecs = node.client()
    fam = unique("meta")
    script = ("sleep 4; for p in /task '' /stats /task/stats; do wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4$p\"; echo; done; "
              "echo \"v3=$ECS_CONTAINER_METADATA_URI\"; wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/nothing\" || echo missing; "
              "exec sleep 600")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": busybox, "cpu": 128, "memory": 256, "command": ["sh", "-c", script]}])
    arn = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)["tasks"][0]["taskArn"]
    task_id = arn.rsplit("/", 1)[1]

    def lines():
        out = subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True, timeout=30)
        got = out.stdout.splitlines()
        return len(got) >= 6 and got
    out = wait_until(lines, timeout=60, interval=0.5, what="the task's metadata in its output")
    task, container, stats, task_stats = (json.loads(l) for l in out[:4])
    t = ecs.describe_tasks(tasks=[arn])["tasks"][0]
    assert task["TaskARN"] == arn and task["Cluster"] == t["clusterArn"]
    assert task["Family"] == fam and task["Revision"] == "1" and task["LaunchType"] == "FARGATE"
    assert task["Limits"] == {"CPU": 0.25, "Memory": 512} and task["KnownStatus"] == "RUNNING"
    assert task["AvailabilityZone"] == t["availabilityZone"]
    [c] = task["Containers"]
    assert c == container
    ip = t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]
    assert c["Name"] == "app" and c["DockerId"] == f"{task_id}-app" and c["Image"] == busybox
    assert c["Limits"] == {"CPU": 128, "Memory": 256} and c["KnownStatus"] == "RUNNING"
    assert c["Networks"] == [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip], "AttachmentIndex": 0}]
    assert c["Labels"]["com.amazonaws.ecs.task-arn"] == arn
    assert stats["memory_stats"]["limit"] == 256 << 20 and 0 < stats["memory_stats"]["usage"] < 256 << 20
    assert stats["cpu_stats"]["online_cpus"] >= 1 and stats["cpu_stats"]["system_cpu_usage"] > 0
    assert set(stats["networks"]) == {"eth0"} and {"rx_bytes", "tx_bytes"} <= set(stats["networks"]["eth0"])
    assert stats["id"] == f"{task_id}-app"
    assert list(task_stats) == [f"{task_id}-app"]
    assert out[4] == f"v3=http://169.254.170.2/v3/{task_id}-app" and out[5] == "missing", out[4:]

    # Another task that knows the first one's id reads nothing of it, and its own as usual.
    nosy = ("sleep 2; wget -qO- http://169.254.170.2/v4/%s-app/task || echo refused; "
            "wget -qO- \"$ECS_CONTAINER_METADATA_URI_V4/task\" >/dev/null && echo own; exec sleep 600") % task_id
    other = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, overrides={
        "containerOverrides": [{"name": "app", "command": ["sh", "-c", nosy]}]})["tasks"][0]["taskArn"]

    def nosy_lines():
        out = subprocess.run([BIN, "logs", other, "--data-dir", node.data_dir], capture_output=True, text=True, timeout=30)
        got = out.stdout.splitlines()
        return len(got) >= 2 and got
    assert wait_until(nosy_lines, timeout=60, interval=0.5, what="the other task's attempts") == ["refused", "own"]
    ecs.stop_task(task=other)
    ecs.stop_task(task=arn)
