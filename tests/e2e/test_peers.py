"""Several servers on one etcd share what the versioned store does not hold: registry blobs
(fetched from the server that has them), CloudWatch Logs events and metric datapoints (owned by
the leader: followers forward those APIs to it, and it replicates what it ingests to them).
Control plane only: the servers run no node."""

import hashlib
import ipaddress
import json
import os
import time
import urllib.error
import urllib.request

import botocore.exceptions
import pytest

import images as img

from conftest import Estiba, isolated, unique, wait_until
from test_etcd import ETCD, Etcd, health, small_image

pytestmark = pytest.mark.skipif(not ETCD, reason="no etcd binary (install Debian's etcd-server)")

TOKEN = "peer-token-" + "x" * 24
OCI = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def etcd():
    e = Etcd()
    yield e
    e.stop()


def pair(tmp_path, etcd, *extra):
    """Two servers on one etcd prefix with a shared join token: (leader, follower)."""
    tokens = tmp_path / "join-tokens"
    tokens.write_text(f"# shared by the servers\n{TOKEN}\n")
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--join-tokens", str(tokens), *extra]
    a = Estiba(str(tmp_path / "a"), extra_args=args).start()
    b = Estiba(str(tmp_path / "b"), extra_args=args).start()
    try:
        wait_until(lambda: [health(a)["leader"], health(b)["leader"]].count(True) == 1, timeout=15,
                   what="exactly one leader")
        yield (a, b) if health(a)["leader"] else (b, a)
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def servers(tmp_path, etcd):
    yield from pair(tmp_path, etcd, "--metric-period", "2s")


@pytest.fixture
def collecting(tmp_path, etcd):
    yield from pair(tmp_path, etcd, "--registry-gc-grace", "2s", "--registry-gc-every", "1s")


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.mark.parametrize("push_to", ["leader", "follower"])
def test_an_image_pushed_to_one_server_is_pulled_from_the_other(servers, push_to):
    leader, follower = servers
    src, dst = (leader, follower) if push_to == "leader" else (follower, leader)
    repo = unique("shared")
    src.client("ecr").create_repository(repositoryName=repo)
    payload = os.urandom(300_000)
    digest = small_image(img.Registry(src.endpoint), repo, "v1", payload)

    # The manifest and every blob it names, from the other server (once its view has the
    # image: each server reads from its own watch-fed view).
    url = f"{dst.endpoint}/v2/{repo}/manifests/v1"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    wait_until(lambda: get(url, accept)[0] != 404, timeout=10, what="the image in the other server's view")
    status, headers, body = get(url, accept)
    assert status == 200, body
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    assert headers["docker-content-digest"] == digest
    manifest = json.loads(body)
    for d in [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        status, headers, blob = get(f"{dst.endpoint}/v2/{repo}/blobs/{d}")
        assert status == 200, blob
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == d
        # Now on the other server's own disk.
        assert os.path.exists(os.path.join(dst.data_dir, "registry", "blobs", "sha256", d.split(":")[1]))
    # A range of a blob fetched earlier is served from the local copy.
    layer = manifest["layers"][0]["digest"]
    status, _, part = get(f"{dst.endpoint}/v2/{repo}/blobs/{layer}", {"Range": "bytes=0-9"})
    assert status == 206 and len(part) == 10
    # ECR's BatchGetImage on the other server answers the manifest too.
    got = dst.client("ecr").batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [digest] and got["failures"] == []
    # A blob no repository holds is unknown on both, as before.
    missing = "sha256:" + hashlib.sha256(b"nothing").hexdigest()
    for s in (leader, follower):
        status, _, body = get(f"{s.endpoint}/v2/{repo}/blobs/{missing}")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_a_followers_copies_go_when_the_leader_collects_their_blobs(collecting):
    leader, follower = collecting
    repo = unique("gc")
    leader.client("ecr").create_repository(repositoryName=repo)
    small_image(img.Registry(leader.endpoint), repo, "v1", os.urandom(1000))
    url = f"{follower.endpoint}/v2/{repo}/manifests/v1"
    wait_until(lambda: get(url, {"Accept": OCI})[0] == 200, timeout=10, what="the image through the follower")
    layer = json.loads(get(url, {"Accept": OCI})[2])["layers"][0]["digest"]
    assert get(f"{follower.endpoint}/v2/{repo}/blobs/{layer}")[0] == 200

    def on_disk(s):
        return os.path.exists(os.path.join(s.data_dir, "registry", "blobs", "sha256", layer[7:]))
    assert on_disk(leader) and on_disk(follower)
    # Still used: both keep it past the grace period.
    time.sleep(4)
    assert on_disk(leader) and on_disk(follower)
    leader.client("ecr").batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    wait_until(lambda: not on_disk(leader) and not on_disk(follower), timeout=30, interval=0.5,
               what="both copies of the unused blob collected")


def test_the_peer_api_wants_a_join_token(servers):
    leader, follower = servers
    repo = unique("tok")
    leader.client("ecr").create_repository(repositoryName=repo)
    digest = small_image(img.Registry(leader.endpoint), repo, "v1", b"token test")
    url = f"{leader.endpoint}/_estiba/peer/v1/blobs/{digest}"
    assert get(url)[0] == 401
    assert get(url, {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == digest
    # A peer serves only what is on its own disk: it never fetches on another's behalf.
    other = "sha256:" + hashlib.sha256(b"elsewhere").hexdigest()
    assert get(f"{follower.endpoint}/_estiba/peer/v1/blobs/{other}", {"Authorization": f"Bearer {TOKEN}"})[0] == 404


def log_events(logs, group, stream):
    return [e["message"] for e in logs.get_log_events(logGroupName=group, logStreamName=stream,
                                                      startFromHead=True)["events"]]


def test_logs_put_on_one_server_are_read_on_the_other(servers):
    leader, follower = servers
    group = unique("/peers/logs")
    follower.client("logs").create_log_group(logGroupName=group)
    for s, stream in ((leader, "on-leader"), (follower, "on-follower")):
        logs = s.client("logs")
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": now + i, "message": f"{stream} {i}"} for i in range(3)])
    for s in (leader, follower):
        logs = s.client("logs")
        for stream in ("on-leader", "on-follower"):
            assert log_events(logs, group, stream) == [f"{stream} {i}" for i in range(3)]
        found = logs.filter_log_events(logGroupName=group, filterPattern="follower")["events"]
        assert sorted(e["message"] for e in found) == [f"on-follower {i}" for i in range(3)]
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
        assert sorted(x["logStreamName"] for x in streams) == ["on-follower", "on-leader"]


def test_the_new_leader_has_the_logs_written_before_the_old_one_died(servers):
    leader, follower = servers
    group = unique("/peers/failover")
    logs = follower.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    t0 = int(time.time() * 1000)
    for batch in range(3):
        # Through both servers: the leader stores, the follower forwards.
        s = (leader, follower)[batch % 2]
        s.client("logs").put_log_events(logGroupName=group, logStreamName="s", logEvents=[
            {"timestamp": t0 + batch * 10 + i, "message": f"before {batch}.{i}"} for i in range(5)])
    expected = [f"before {b}.{i}" for b in range(3) for i in range(5)]
    assert log_events(logs, group, "s") == expected
    ns = unique("Peers/failover")
    leader.client("cloudwatch").put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Kept", "Value": 7.0}])
    # Replication to the follower takes milliseconds; then the leader dies without a word.
    time.sleep(1)
    leader.kill9()
    wait_until(lambda: health(follower)["leader"], timeout=15, interval=0.2, what="the follower leading")
    assert log_events(logs, group, "s") == expected
    stats = follower.client("cloudwatch").get_metric_statistics(
        Namespace=ns, MetricName="Kept", StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60,
        Statistics=["Sum", "SampleCount"])["Datapoints"]
    assert [(d["Sum"], d["SampleCount"]) for d in stats] == [(7.0, 1.0)]
    found = logs.filter_log_events(logGroupName=group, filterPattern="before")["events"]
    assert [e["message"] for e in found] == expected
    # The stream goes on under the new leader.
    logs.put_log_events(logGroupName=group, logStreamName="s",
                        logEvents=[{"timestamp": t0 + 100, "message": "after"}])
    assert log_events(logs, group, "s") == expected + ["after"]
    # The old leader comes back as a follower: it answers from the new leader's logs.
    leader.start()
    wait_until(lambda: health(leader)["leader"] is False, timeout=10, what="the old leader following")
    assert log_events(leader.client("logs"), group, "s") == expected + ["after"]


def test_a_server_that_joins_later_takes_the_leaders_history(tmp_path, etcd):
    tokens = tmp_path / "join-tokens"
    tokens.write_text(f"{TOKEN}\n")
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--join-tokens", str(tokens),
            "--metric-period", "2s"]
    a = Estiba(str(tmp_path / "a"), extra_args=args).start()
    b = Estiba(str(tmp_path / "b"), extra_args=args)
    try:
        wait_until(lambda: health(a)["leader"], timeout=15, what="the first server leading")
        group, ns = unique("/peers/history"), unique("Peers/history")
        logs = a.client("logs")
        logs.create_log_group(logGroupName=group)
        t0 = int(time.time() * 1000)
        for stream in ("one", "two", "empty"):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        for batch in range(3):
            # Each batch has its own ingestion time, which the copy keeps.
            logs.put_log_events(logGroupName=group, logStreamName="one", logEvents=[
                {"timestamp": t0 + batch * 10 + i, "message": f"one {batch}.{i}"} for i in range(4)])
            time.sleep(0.01)
        logs.put_log_events(logGroupName=group, logStreamName="two",
                            logEvents=[{"timestamp": t0 + i, "message": f"two {i}"} for i in range(2500)])
        a.client("cloudwatch").put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": "Before", "Value": 7.0}, {"MetricName": "Before", "Value": 3.0}])
        before = logs.get_log_events(logGroupName=group, logStreamName="one", startFromHead=True)["events"]
        # The second server starts after all of that was written and in no ring it can read.
        b.start()
        wait_until(lambda: "took the leader's log and metric history" in b.log(), timeout=20,
                   what="the late server taking the history")
        assert os.path.exists(os.path.join(b.data_dir, "replication-cursor"))
        # What comes after the join travels the ring as before.
        logs.put_log_events(logGroupName=group, logStreamName="one",
                            logEvents=[{"timestamp": t0 + 100, "message": "after the join"}])
        time.sleep(1)
        a.kill9()
        wait_until(lambda: health(b)["leader"], timeout=15, interval=0.2, what="the late server leading")
        logs = b.client("logs")
        got = logs.get_log_events(logGroupName=group, logStreamName="one", startFromHead=True)["events"]
        assert got[:-1] == before
        assert [e["message"] for e in got[-1:]] == ["after the join"]
        assert len({e["ingestionTime"] for e in before}) == 3
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group, logStreamNames=["two"])
        two = [e["message"] for p in pages for e in p["events"]]
        assert two == [f"two {i}" for i in range(2500)]
        streams = {s["logStreamName"]: s for s in logs.describe_log_streams(logGroupName=group)["logStreams"]}
        assert sorted(streams) == ["empty", "one", "two"]
        stats = b.client("cloudwatch").get_metric_statistics(
            Namespace=ns, MetricName="Before", StartTime=time.time() - 600, EndTime=time.time() + 60, Period=60,
            Statistics=["Sum", "SampleCount", "Maximum"])["Datapoints"]
        assert [(d["Sum"], d["SampleCount"], d["Maximum"]) for d in stats] == [(10.0, 2.0, 7.0)]
        # The stream goes on under the new leader with the numbers the first one gave.
        logs.put_log_events(logGroupName=group, logStreamName="two",
                            logEvents=[{"timestamp": t0 + 5000, "message": "two more"}])
        last = logs.get_log_events(logGroupName=group, logStreamName="two", limit=2)["events"]
        assert [e["message"] for e in last] == ["two 2499", "two more"]
    finally:
        a.stop()
        b.stop()


def test_metrics_put_on_a_follower_reach_the_leaders_alarms(servers):
    leader, follower = servers
    ns, name = unique("Peers/app"), unique("load-high")
    # The alarm is made through the follower (forwarded), evaluated by the leader's controllers.
    follower.client("cloudwatch").put_metric_alarm(
        AlarmName=name, Namespace=ns, MetricName="Load", Statistic="Maximum", Period=60,
        EvaluationPeriods=1, Threshold=50.0, ComparisonOperator="GreaterThanThreshold")
    follower.client("cloudwatch").put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Load", "Value": 80.0}])
    start = time.time() - 120

    def values(s):
        r = s.client("cloudwatch").get_metric_data(
            MetricDataQueries=[{"Id": "m", "MetricStat": {
                "Metric": {"Namespace": ns, "MetricName": "Load"}, "Period": 60, "Stat": "Maximum"}}],
            StartTime=start, EndTime=time.time() + 60)
        return r["MetricDataResults"][0]["Values"]
    assert values(leader) == [80.0] and values(follower) == [80.0]
    # A large PutMetricData, which botocore sends gzipped, forwarded as well.
    big = [{"MetricName": "Wide", "Dimensions": [{"Name": "Shard", "Value": f"s{i}"}], "Value": float(i)}
           for i in range(400)]
    follower.client("cloudwatch").put_metric_data(Namespace=ns, MetricData=big)
    listed = leader.client("cloudwatch").list_metrics(Namespace=ns, MetricName="Wide")["Metrics"]
    assert len(listed) == 400
    cw = leader.client("cloudwatch")
    wait_until(lambda: cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"] == "ALARM",
               timeout=20, interval=0.2, what="the alarm in ALARM")
    [a] = follower.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert a["StateValue"] == "ALARM" and "80.0" in a["StateReason"]


def agent_call(server, path, body):
    req = urllib.request.Request(f"{server.endpoint}/_estiba/agent/v1/{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {TOKEN}",
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as r:
        body = r.read()
        return json.loads(body) if body else None


def test_an_agents_container_logs_sent_to_a_follower_reach_the_leader(servers):
    """An awslogs shipper (an agent) connected to a follower: its numbered appends go to the
    leader, which owns the logs; a resend after a failover makes no duplicates."""
    leader, follower = servers
    group = unique("/ecs/peers")
    dest = {"account": "000000000000", "region": "us-east-1", "group": group, "stream": "app/web/1",
            "createGroup": True}
    assert agent_call(follower, "nodes/n1/logs/open", dest) == {"Ok": 0}
    t0 = int(time.time() * 1000)
    events = [{"timestamp": t0 + i, "message": f"line {i}"} for i in range(4)]
    assert agent_call(follower, "nodes/n1/logs/append", {"dest": dest, "seq": 0, "events": events}) == {"Ok": 4}
    # Sent again from the same number (a shipper that did not see the answer): held already.
    assert agent_call(follower, "nodes/n1/logs/append", {"dest": dest, "seq": 2, "events": events[2:]}) == {"Ok": 4}
    expected = [f"line {i}" for i in range(4)]
    assert log_events(leader.client("logs"), group, "app/web/1") == expected
    time.sleep(1)
    leader.kill9()
    wait_until(lambda: health(follower)["leader"], timeout=15, interval=0.2, what="the follower leading")
    # The new leader numbers the stream as the old one did: the resend is skipped again.
    assert agent_call(follower, "nodes/n1/logs/append", {"dest": dest, "seq": 3, "events": events[3:]}) == {"Ok": 4}
    more = [{"timestamp": t0 + 10, "message": "line 4"}]
    assert agent_call(follower, "nodes/n1/logs/append", {"dest": dest, "seq": 4, "events": more}) == {"Ok": 5}
    assert log_events(follower.client("logs"), group, "app/web/1") == expected + ["line 4"]


@pytest.mark.skipif(os.geteuid() != 0 or not isolated(),
                    reason="runs a container: root, inside a network namespace with no route out")
def test_a_followers_node_runs_an_image_pushed_to_the_leader_and_ships_its_logs_there(tmp_path, etcd):
    tokens = tmp_path / "join-tokens"
    tokens.write_text(TOKEN + "\n")
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--join-tokens", str(tokens)]
    a = Estiba(str(tmp_path / "a"), extra_args=args).start()
    wait_until(lambda: health(a)["leader"], timeout=15, what="the first server leading")
    b = Estiba(str(tmp_path / "b"), extra_args=args, node=True).start()
    try:
        assert health(b)["leader"] is False
        repo, group = unique("peerimg"), unique("/peers/task")
        a.client("ecr").create_repository(repositoryName=repo)
        img.busybox_image(img.Registry(a.endpoint), repo, "v1")
        # B's node pulls from B's own registry, which has the image's bytes only from A.
        image = f"127.0.0.1:{b.port}/{repo}:v1"
        ecs = b.client()
        fam = unique("f")
        ecs.register_task_definition(
            family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{
                "name": "app", "image": image, "essential": True,
                "command": ["sh", "-c", "echo hello from the follower node"],
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs",
                    "awslogs-create-group": "true"}}}])
        arn = ecs.run_task(taskDefinition=fam, networkConfiguration={
            "awsvpcConfiguration": {"subnets": ["subnet-12345678"]}})["tasks"][0]["taskArn"]
        t = wait_until(lambda: (t := ecs.describe_tasks(tasks=[arn])["tasks"][0])["lastStatus"] == "STOPPED" and t,
                       timeout=90, what="the task run and stopped")
        assert t["containers"][0].get("exitCode") == 0, t
        stream = f"ecs/app/{arn.rsplit('/', 1)[1]}"
        assert log_events(a.client("logs"), group, stream) == ["hello from the follower node"]
        # The layer came to B's disk from A's.
        _, _, body = get(f"{a.endpoint}/v2/{repo}/manifests/v1", {"Accept": OCI})
        for layer in json.loads(body)["layers"]:
            assert os.path.exists(os.path.join(b.data_dir, "registry", "blobs", "sha256", layer["digest"][7:]))
    finally:
        b.drain()
        b.stop()
        a.stop()


def test_target_health_a_follower_hears_reaches_the_leader(servers):
    """Target health from nodes connected to a follower goes on to the leader, whose
    controllers wait on it (deployments behind a load balancer)."""
    leader, follower = servers
    ec2, elb = leader.client("ec2"), leader.client("elbv2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])]
    tg = elb.create_target_group(Name=unique("tg"), Protocol="HTTP", Port=80, VpcId=vpc,
                                 TargetType="ip")["TargetGroups"][0]
    lb = elb.create_load_balancer(Name=unique("alb"), Subnets=subnets[:2])["LoadBalancers"][0]
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    vpc_address = str(ipaddress.ip_network(ec2.describe_vpcs()["Vpcs"][0]["CidrBlock"])[333])
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": vpc_address, "Port": 8080}])
    wait_until(lambda: follower.client("elbv2").describe_target_health(TargetGroupArn=tg["TargetGroupArn"])[
        "TargetHealthDescriptions"], timeout=10, what="the target in the follower's view")
    target = f"{vpc_address}:8080"

    def state(s):
        [d] = s.client("elbv2").describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
        return d["TargetHealth"]["State"]
    before = state(leader)
    assert before != "healthy"
    agent_call(follower, "nodes/n1/telemetry", [{"kind": "targetHealth", "items": [
        {"node": "n1", "targetGroupArn": tg["TargetGroupArn"], "target": target, "state": "healthy"}]}])
    wait_until(lambda: state(leader) == "healthy", timeout=10, what="the leader hearing the target healthy")


def test_two_servers_placing_at_once_never_overfill_an_instance(servers):
    """RunTask on both servers at once, on instances with room for 16 tasks: each server's
    reservations see only its own requests, so the store guards the instances (a compare on
    each instance placed on): exactly 16 tasks are placed, then both answer RESOURCE:CPU."""
    from concurrent.futures import ThreadPoolExecutor

    from test_instances import bridge_td, fleet

    leader, follower = servers
    cluster = unique("race")
    ecs = [leader.client(), follower.client()]
    ecs[0].create_cluster(clusterName=cluster)
    fleet(ecs[0], cluster, [(f"i-r{n}", "m5.large", "us-east-1a") for n in range(4)], cpu=1024, memory=8192)
    fam = bridge_td(ecs[0], cpu=256, memory=64)
    wait_until(lambda: len(ecs[1].list_container_instances(cluster=cluster)["containerInstanceArns"]) == 4,
               what="the follower seeing the instances")
    wait_until(lambda: ecs[1].describe_task_definition(taskDefinition=fam)["taskDefinition"], what="the task definition")

    def run(client):
        placed, reasons = 0, set()
        for _ in range(20):
            r = client.run_task(cluster=cluster, taskDefinition=fam, count=1, launchType="EC2")
            placed += len(r["tasks"])
            reasons.update(f["reason"] for f in r["failures"])
        return placed, reasons

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, [ecs[i % 2] for i in range(8)]))
    assert sum(p for p, _ in results) == 16, results
    assert {"RESOURCE:CPU"} == set().union(*(r for _, r in results)), results
    arns = ecs[0].list_container_instances(cluster=cluster)["containerInstanceArns"]
    for ci in ecs[0].describe_container_instances(cluster=cluster, containerInstances=arns)["containerInstances"]:
        remaining = {r["name"]: r.get("integerValue") for r in ci["remainingResources"]}
        assert remaining["CPU"] == 0, ci


@pytest.fixture
def signed_pair(tmp_path, etcd):
    creds = tmp_path / "credentials"
    creds.write_text("[ops]\naws_access_key_id = AKIAPEERS000000001\naws_secret_access_key = test\naccount = 333333333333\n")
    yield from pair(tmp_path, etcd, "--credentials", str(creds))


def test_signed_requests_forwarded_to_the_leader_are_verified_there(signed_pair):
    """With --credentials, what a follower forwards (as received, gzip and all) passes the
    leader's verification, in the key's account."""
    leader, follower = signed_pair
    ak = "AKIAPEERS000000001"
    big = [{"MetricName": "Wide", "Dimensions": [{"Name": "Shard", "Value": f"s{i}"}], "Value": float(i)}
           for i in range(400)]
    follower.client("cloudwatch", access_key=ak).put_metric_data(Namespace="Auth/peers", MetricData=big)
    assert len(leader.client("cloudwatch", access_key=ak).list_metrics(Namespace="Auth/peers")["Metrics"]) == 400
    follower.client("logs", access_key=ak).create_log_group(logGroupName="/peers/auth")
    groups = leader.client("logs", access_key=ak).describe_log_groups()["logGroups"]
    assert [g["arn"].split(":")[4] for g in groups] == ["333333333333"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        follower.client("logs").describe_log_groups()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
