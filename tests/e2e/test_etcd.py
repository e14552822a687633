"""The etcd store: `estiba server --store etcd` keeps its state in a real etcd (Debian's
`etcd-server`, started here on free loopback ports), survives a restart, and `estiba migrate`
moves a SQLite state into etcd. Control plane only: the servers run no node, so service tasks
stay PROVISIONING."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

import images as img

from conftest import BIN, Estiba, free_port, launch_etcd, register_fargate, unique, wait_until, AWSVPC

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ETCD = os.environ.get("ESTIBA_ETCD_BIN") or shutil.which("etcd")

pytestmark = pytest.mark.skipif(not ETCD, reason="no etcd binary (install Debian's etcd-server)")


class Etcd:
    """One etcd member on loopback with its data in a temporary directory."""

    def __init__(self, args=()):
        self.dir = tempfile.mkdtemp(prefix="estiba-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.proc, self.endpoint, (self.port, _) = launch_etcd(self.dir, "default", args)

    def keys(self, prefix):
        """The keys under `prefix`, read with etcd's own v3 JSON gateway."""
        import base64
        import json
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(end.encode()).decode(), "keys_only": True}).encode()
        req = urllib.request.Request(self.endpoint + "/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            kvs = json.loads(r.read()).get("kvs", [])
        return [base64.b64decode(kv["key"]).decode() for kv in kvs]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd():
    e = Etcd()
    yield e
    e.stop()


def make_state(ecs):
    """A cluster, a task definition and a service: what must survive."""
    cluster = unique("etcd")
    ecs.create_cluster(clusterName=cluster, tags=[{"key": "k", "value": "v"}])
    family = unique("fam")
    td = register_fargate(ecs, family)["taskDefinitionArn"]
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=2,
                       launchType="FARGATE", networkConfiguration=AWSVPC)
    return cluster, family, td


def check_state(ecs, cluster, family, td):
    c = ecs.describe_clusters(clusters=[cluster], include=["TAGS"])["clusters"]
    assert [x["status"] for x in c] == ["ACTIVE"]
    assert c[0]["tags"] == [{"key": "k", "value": "v"}]
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["taskDefinitionArn"] == td
    s = ecs.describe_services(cluster=cluster, services=["web"])["services"]
    assert [(x["serviceName"], x["status"], x["desiredCount"]) for x in s] == [("web", "ACTIVE", 2)]
    tasks = wait_until(lambda: ecs.list_tasks(cluster=cluster)["taskArns"], what="the service's tasks")
    return sorted(tasks)


def test_state_in_etcd_survives_a_restart(tmp_path, etcd):
    prefix = "/estiba-" + unique("p") + "/"
    srv = Estiba(str(tmp_path), ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", prefix]).start()
    try:
        ecs = srv.client()
        cluster, family, td = make_state(ecs)
        tasks = wait_until(lambda: len(ecs.list_tasks(cluster=cluster)["taskArns"]) == 2 and ecs.list_tasks(cluster=cluster)["taskArns"], what="two tasks")
        # The state is in etcd under the prefix, and not in a SQLite file.
        keys = etcd.keys(prefix)
        assert any(cluster in k for k in keys), keys[:20]
        assert all(k.startswith(prefix) for k in keys)
        assert not os.path.exists(os.path.join(str(tmp_path), "state.db"))
        srv.restart()
        ecs = srv.client()
        assert check_state(ecs, cluster, family, td) == sorted(tasks)
        # Writes keep working after the restart.
        ecs.update_service(cluster=cluster, service="web", desiredCount=0)
        assert ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["desiredCount"] == 0
        ecs.delete_service(cluster=cluster, service="web", force=True)
    finally:
        srv.stop()


def test_migrate_moves_a_sqlite_state_into_etcd(tmp_path, etcd):
    sqlite_dir = str(tmp_path / "sqlite")
    srv = Estiba(sqlite_dir, ["--store", "sqlite"]).start()  # the source: SQLite in every run
    try:
        ecs = srv.client()
        cluster, family, td = make_state(ecs)
        tasks = wait_until(lambda: len(ecs.list_tasks(cluster=cluster)["taskArns"]) == 2 and ecs.list_tasks(cluster=cluster)["taskArns"], what="two tasks")
    finally:
        srv.stop()
    prefix = "/estiba/"
    state = os.path.join(sqlite_dir, "state.db")
    out = subprocess.run([BIN, "migrate", "--from-sqlite", state, "--etcd-endpoints", etcd.endpoint],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "copied" in out.stdout and "transactions" in out.stdout, out.stdout
    copied = len(etcd.keys(prefix))
    assert f"copied {copied} keys" in out.stdout
    # Into a prefix that holds keys: refused, nothing written.
    again = subprocess.run([BIN, "migrate", "--from-sqlite", state, "--etcd-endpoints", etcd.endpoint],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "empty prefix" in again.stderr, again.stderr
    assert len(etcd.keys(prefix)) == copied
    # A server on the migrated state sees the same resources.
    srv = Estiba(str(tmp_path / "etcd-server"), ["--store", "etcd", "--etcd-endpoints", etcd.endpoint]).start()
    try:
        ecs = srv.client()
        assert check_state(ecs, cluster, family, td) == sorted(tasks)
        ecs.delete_service(cluster=cluster, service="web", force=True)
    finally:
        srv.stop()


def test_store_etcd_needs_endpoints(tmp_path):
    p = subprocess.run([BIN, "server", "--store", "etcd", "--data-dir", str(tmp_path), "--local-node", "off",
                        "--listen", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "--etcd-endpoints" in p.stderr


def health(server):
    import json
    with urllib.request.urlopen(server.endpoint + "/_estiba/health", timeout=2) as r:
        return json.loads(r.read())


def test_servers_on_one_etcd_elect_one_leader_and_fail_over(tmp_path, etcd):
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint]
    a = Estiba(str(tmp_path / "a"), extra_args=args).start()
    b = Estiba(str(tmp_path / "b"), extra_args=args).start()
    try:
        wait_until(lambda: [health(a)["leader"], health(b)["leader"]].count(True) == 1, timeout=15,
                   what="exactly one leader")
        leader, other = (a, b) if health(a)["leader"] else (b, a)
        # Both serve the API; a write through one is read through the other.
        cluster, family, td = make_state(leader.client())
        check_state(other.client(), cluster, family, td)
        # The leader runs the controllers: the service's two tasks exist.
        ecs = other.client()
        wait_until(lambda: len(ecs.list_tasks(cluster=cluster)["taskArns"]) == 2, what="two tasks")
        acked = unique("acked")
        leader.client().create_cluster(clusterName=acked)
        leader.kill9()
        killed = time.time()
        wait_until(lambda: health(other)["leader"], timeout=15, interval=0.2, what="the other server leading")
        took = time.time() - killed
        assert took < 10, f"failover took {took:.1f}s"
        # No acknowledged write is lost, and the new leader's controllers act on new changes.
        assert ecs.describe_clusters(clusters=[acked])["clusters"][0]["status"] == "ACTIVE"
        ecs.update_service(cluster=cluster, service="web", desiredCount=3)
        wait_until(lambda: len(ecs.list_tasks(cluster=cluster)["taskArns"]) == 3, timeout=15,
                   what="the new leader's scheduler starting a third task")
        # The killed server comes back as a follower.
        leader.start()
        time.sleep(1)
        assert health(leader)["leader"] is False and health(other)["leader"] is True
    finally:
        a.stop()
        b.stop()


def small_image(registry, repo, tag, payload):
    """Pushes a one-layer OCI image; returns its manifest digest."""
    blob, diff_id, media = img.tar_layer([("hello.txt", payload)])
    ldigest = registry.push_blob(repo, blob)
    cfg = img.config_blob([diff_id])
    cdigest = registry.push_blob(repo, cfg)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": len(cfg)},
        "layers": [{"mediaType": media, "digest": ldigest, "size": len(blob)}],
    }).encode()
    status, _, body = registry.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    assert status == 201, (status, body)
    return img.sha256(manifest)


def gone(fn, code):
    """Whether calling `fn` fails with the error `code`."""
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"] == code
    return False


def test_writers_stay_within_a_small_txn_limit(tmp_path):
    """With etcd and estiba both at 16 operations per transaction (etcd's default is 128), the
    operations and controllers that write many keys split their work and finish it: RunTask
    of 10, housekeeping's expiry, a service of 20 deleted, a scalable target deregistered with
    20 scheduled actions, an instance with 20 tasks deregistered, a repository of 30 images
    force-deleted, a load balancer with its listeners and rules deleted, 30 alarms deleted,
    a Cloud Map namespace with its services deleted. Nothing is refused for its size."""
    etcd = Etcd(["--max-txn-ops=16"])
    srv = Estiba(str(tmp_path), [
        "--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", "/small/", "--etcd-max-txn-ops", "16",
        "--stopped-task-retention", "1s", "--inactive-retention", "1s", "--housekeeping-every", "1s",
    ]).start()
    try:
        ecs = srv.client()
        cluster = unique("small")
        ecs.create_cluster(clusterName=cluster)
        td = register_fargate(ecs, unique("fam"))["taskDefinitionArn"]
        tags = [{"key": "team", "value": "a"}]

        # RunTask of 10, each task with its tags: more than one transaction.
        out = ecs.run_task(cluster=cluster, taskDefinition=td, count=10, launchType="FARGATE",
                           networkConfiguration=AWSVPC, tags=tags)
        assert (len(out["tasks"]), out["failures"]) == (10, [])
        assert ecs.list_tags_for_resource(resourceArn=out["tasks"][9]["taskArn"])["tags"] == tags
        for t in out["tasks"]:
            ecs.stop_task(cluster=cluster, task=t["taskArn"])

        # A service of 20 tasks, then deleted: the scheduler starts and stops them in passes.
        ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=20,
                           launchType="FARGATE", networkConfiguration=AWSVPC, propagateTags="SERVICE", tags=tags)
        wait_until(lambda: len(ecs.list_tasks(cluster=cluster, serviceName="web")["taskArns"]) == 20,
                   timeout=20, what="20 service tasks")
        ecs.delete_service(cluster=cluster, service="web", force=True)

        # A scalable target with 20 scheduled actions, deregistered with them.
        ecs.create_service(cluster=cluster, serviceName="api", taskDefinition=td, desiredCount=0,
                           launchType="FARGATE", networkConfiguration=AWSVPC)
        aas = srv.client("application-autoscaling")
        target = dict(ServiceNamespace="ecs", ResourceId=f"service/{cluster}/api",
                      ScalableDimension="ecs:service:DesiredCount")
        aas.register_scalable_target(MinCapacity=0, MaxCapacity=4, **target)
        for i in range(20):
            aas.put_scheduled_action(ScheduledActionName=f"a{i}", Schedule="at(2099-01-01T00:00:00)",
                                     ScalableTargetAction={"MinCapacity": 0, "MaxCapacity": i % 4 + 1}, **target)
        aas.deregister_scalable_target(**target)
        assert aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=target["ResourceId"])["ScheduledActions"] == []
        assert aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[target["ResourceId"]])["ScalableTargets"] == []
        ecs.delete_service(cluster=cluster, service="api")

        # A container instance with 20 EC2 tasks, deregistered with force: they stop.
        ci = ecs.register_container_instance(cluster=cluster, totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 8192}])["containerInstance"]["containerInstanceArn"]
        fam = unique("ec2")
        ecs.register_task_definition(family=fam, containerDefinitions=[{"name": "a", "image": "i", "memory": 64}])
        ec2_tasks = [t["taskArn"] for _ in range(2)
                     for t in ecs.run_task(cluster=cluster, taskDefinition=fam, launchType="EC2", count=10)["tasks"]]
        assert len(ec2_tasks) == 20
        ecs.deregister_container_instance(cluster=cluster, containerInstance=ci, force=True)
        assert {t["lastStatus"] for t in ecs.describe_tasks(cluster=cluster, tasks=ec2_tasks)["tasks"]} == {"STOPPED"}

        # A repository of 30 images: 10 deleted by tag in one call, then the rest with it.
        ecr = srv.client("ecr")
        repo = unique("repo").lower()
        ecr.create_repository(repositoryName=repo)
        registry = img.Registry(srv.endpoint)
        for i in range(30):
            small_image(registry, repo, f"v{i}", f"payload {i}".encode())
        assert len(ecr.list_images(repositoryName=repo, maxResults=100)["imageIds"]) == 30
        out = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": f"v{i}"} for i in range(10)])
        assert (len(out["imageIds"]), out["failures"]) == (10, [])
        assert len(ecr.list_images(repositoryName=repo, maxResults=100)["imageIds"]) == 20
        ecr.delete_repository(repositoryName=repo, force=True)
        assert gone(lambda: ecr.describe_repositories(repositoryNames=[repo]), "RepositoryNotFoundException")
        ecr.create_repository(repositoryName=repo)
        assert ecr.list_images(repositoryName=repo)["imageIds"] == []

        # A load balancer with 6 listeners of 4 rules each, and a target group of 30 targets.
        elb = srv.client("elbv2")
        ec2 = srv.client("ec2")
        vpc = ec2.describe_vpcs()["Vpcs"][0]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
        lb = elb.create_load_balancer(Name=unique("alb"), Subnets=subnets)["LoadBalancers"][0]
        tg = elb.create_target_group(Name=unique("tg"), Protocol="HTTP", Port=80, VpcId=vpc["VpcId"],
                                     TargetType="ip")["TargetGroups"][0]
        fwd = [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]
        listeners = []
        for port in range(8001, 8007):
            la = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                                     DefaultActions=fwd)["Listeners"][0]["ListenerArn"]
            listeners.append(la)
            for p in range(1, 5):
                elb.create_rule(ListenerArn=la, Priority=p, Actions=fwd,
                                Conditions=[{"Field": "path-pattern", "Values": [f"/r{p}/*"]}])
        base = vpc["CidrBlock"].rsplit(".", 2)[0]
        elb.register_targets(TargetGroupArn=tg["TargetGroupArn"],
                             Targets=[{"Id": f"{base}.1.{10 + i}"} for i in range(30)])
        elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
        assert gone(lambda: elb.describe_load_balancers(LoadBalancerArns=[lb["LoadBalancerArn"]]),
                    "LoadBalancerNotFound")
        assert gone(lambda: elb.describe_listeners(ListenerArns=listeners[-1:]), "ListenerNotFound")
        elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
        assert gone(lambda: elb.describe_target_groups(TargetGroupArns=[tg["TargetGroupArn"]]), "TargetGroupNotFound")

        # 30 alarms, deleted in one call.
        cw = srv.client("cloudwatch")
        names = [f"{cluster}-alarm-{i:02}" for i in range(30)]
        for n in names:
            cw.put_metric_alarm(AlarmName=n, MetricName="CPUUtilization", Namespace="AWS/ECS", Statistic="Average",
                                Period=60, EvaluationPeriods=1, Threshold=50.0,
                                ComparisonOperator="GreaterThanThreshold")
        cw.delete_alarms(AlarmNames=names)
        assert cw.describe_alarms(AlarmNamePrefix=cluster)["MetricAlarms"] == []

        # A Cloud Map namespace with services (AWS makes them go first).
        sd = srv.client("servicediscovery")
        op = sd.create_http_namespace(Name=unique("ns"))["OperationId"]
        ns = wait_until(lambda: sd.get_operation(OperationId=op)["Operation"]["Targets"].get("NAMESPACE"),
                        what="the namespace")
        services = [sd.create_service(Name=f"s{i}", NamespaceId=ns)["Service"]["Id"] for i in range(5)]
        for s in services:
            sd.delete_service(Id=s)
        sd.delete_namespace(Id=ns)
        assert gone(lambda: sd.get_namespace(Id=ns), "NamespaceNotFound")

        # Housekeeping expires the stopped tasks and the deleted service with its records.
        def expired():
            return (ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == []
                    and ecs.list_tasks(cluster=cluster)["taskArns"] == []
                    and ecs.describe_services(cluster=cluster, services=["web", "api"])["services"] == [])
        wait_until(expired, timeout=25, what="housekeeping's expiry")
        ecs.delete_cluster(cluster=cluster)
        wait_until(lambda: ecs.describe_clusters(clusters=[cluster])["clusters"] == [], timeout=15,
                   what="the deleted cluster forgotten")
        # No write anywhere was refused for its size.
        with open(srv.log_path, errors="replace") as f:
            log = f.read()
        assert "more than the store's limit" not in log and "TooManyOps" not in log, log[-3000:]
    finally:
        srv.stop()
        etcd.stop()
