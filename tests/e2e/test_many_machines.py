"""Many machines, as issue 20 checks them: a 3-member etcd, 2 servers on it, and 3 hosts with
`estiba agent` (two Fargate hosts and one EXTERNAL instance), hosts being network namespaces on
a bridge in the test's own namespace (10.78.0.0/24; the servers listen on 10.78.0.1).

A service of 6 tasks behind a load balancer and a Cloud Map name spreads over the Fargate
hosts; a task on the EXTERNAL host reaches them by private address, through the load
balancer's DNS name and through the Cloud Map name, and another service through its Service
Connect alias; an etcd member goes down and everything
keeps working; the leader is killed mid-rollout and the rollout completes under the other
server; a Fargate host's link is cut and its tasks are replaced on the other within the node
lease plus 10 s.

Needs root, Debian's `etcd`, and runs only inside a network namespace with no route out."""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

import images as img
from conftest import Estiba, free_port, isolated, unique, wait_until
from hosts import Host, bridge_up, connected, nodes, private_ip, sh, wait_task

ETCD = os.environ.get("ESTIBA_ETCD_BIN") or shutil.which("etcd")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
    pytest.mark.skipif(not ETCD, reason="no etcd binary (install Debian's etcd-server)"),
]

BRIDGE = "br-many"
SERVER_IP = "10.78.0.1"
TOKEN = "many-machines-token"
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
LEASE = 10


class EtcdCluster:
    """Three etcd members on loopback, each with its own data directory."""

    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="estiba-etcd3-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(n)]
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        self.procs = {}
        for name, client, peer in self.members:
            self.procs[name] = subprocess.Popen(
                [ETCD, "--name", name, "--data-dir", os.path.join(self.dir, name),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "estiba-many"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, f"{name}.log"), "wb"))
        self.endpoints = ",".join(f"http://127.0.0.1:{c}" for _, c, _ in self.members)
        for _, client, _ in self.members:
            wait_until(lambda c=client: self.healthy(c), timeout=30, what="etcd members healthy")

    @staticmethod
    def healthy(port):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self, name):
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def health(server):
    import json
    with urllib.request.urlopen(server.endpoint + "/_estiba/health", timeout=2) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    bridge_up(BRIDGE, f"{SERVER_IP}/24")
    etcd = EtcdCluster()
    d = str(tmp_path_factory.mktemp("many"))
    tokens = os.path.join(d, "join-tokens")
    with open(tokens, "w") as f:
        f.write(f"{TOKEN}\n")
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoints, "--etcd-prefix", "/many/",
            "--join-tokens", tokens, "--node-lease", f"{LEASE}s"]
    s1 = Estiba(os.path.join(d, "s1"), extra_args=args, host=SERVER_IP).start()
    wait_until(lambda: health(s1)["leader"], timeout=15, what="the first server leading")
    s2 = Estiba(os.path.join(d, "s2"), extra_args=args, host=SERVER_IP).start()
    servers = [s1, s2]
    ecs = s1.client()
    ecs.create_cluster(clusterName="default")
    ecs.create_cluster(clusterName="edge")
    hosts = {
        "fa": Host("fa", "10.78.0.11", os.path.join(d, "fa"), BRIDGE),
        "fb": Host("fb", "10.78.0.12", os.path.join(d, "fb"), BRIDGE),
        "ex": Host("ex", "10.78.0.13", os.path.join(d, "ex"), BRIDGE),
    }
    for h in hosts.values():
        os.makedirs(h.data_dir, exist_ok=True)
    hosts["fa"].start_agent(servers, "--fargate", token=TOKEN)
    hosts["fb"].start_agent(servers, "--fargate", token=TOKEN)
    hosts["ex"].start_agent(servers, "--cluster", "edge", "--external", token=TOKEN)
    for h in hosts.values():
        connected(s2, h, timeout=30)
    s1.client("ecr").create_repository(repositoryName="busybox")
    image = img.busybox_image(img.Registry(s1.endpoint), "busybox", "latest")
    yield servers, hosts, etcd, image
    for s in servers:
        if s.proc and s.proc.poll() is None:
            try:
                s.drain(timeout=60)
            except Exception:
                pass
            break
    for h in hosts.values():
        h.close()
    for s in servers:
        s.stop()
    etcd.stop()
    sh("ip", "link", "del", BRIDGE, check=False)


def live(servers):
    return [s for s in servers if s.proc.poll() is None]


def running(ecs, service, revision=None):
    arns = ecs.list_tasks(serviceName=service, desiredStatus="RUNNING")["taskArns"]
    ts = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
    return [t for t in ts if t["lastStatus"] == "RUNNING"
            and (revision is None or t["taskDefinitionArn"].endswith(f":{revision}"))]


def host_of(servers, task):
    tid = task["taskArn"].rsplit("/", 1)[1]
    return next((n for n, v in nodes(live(servers)[0]).items() if tid in v["tasks"]), None)


def test_a_service_spans_machines_and_survives_losing_a_leader_an_etcd_member_and_a_host(machines):
    servers, hosts, etcd, image = machines
    s1, s2 = servers
    ecs, elb, sd = s2.client(), s2.client("elbv2"), s2.client("servicediscovery")

    # A load balancer, a Cloud Map name and a service of 6 behind both (through the follower).
    vpc = s2.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in s2.client("ec2").describe_subnets()["Subnets"]][:2]
    lb = elb.create_load_balancer(Name="many", Subnets=subnets, Type="application")["LoadBalancers"][0]
    tg = elb.create_target_group(Name="many", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip",
                                 HealthCheckPath="/", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                 HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    op = sd.create_private_dns_namespace(Name="many.local", Vpc=vpc)["OperationId"]
    ns = wait_until(lambda: (o := sd.get_operation(OperationId=op)["Operation"])["Status"] == "SUCCESS" and o,
                    what="the namespace")["Targets"]["NAMESPACE"]
    registry = sd.create_service(Name="web", NamespaceId=ns, DnsConfig={
        "RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 5}]})["Service"]["Arn"]

    def register(tag):
        return ecs.register_task_definition(
            family="web", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "web", "image": image, "essential": True,
                                   "command": ["sh", "-c", f"mkdir -p /w && echo {tag}-$(hostname) > /w/index.html && exec httpd -f -p 80 -h /w"],
                                   "portMappings": [{"containerPort": 80}]}])["taskDefinition"]["revision"]
    r1 = register("v1")
    ecs.create_service(serviceName="web", taskDefinition="web", desiredCount=6, launchType="FARGATE",
                       networkConfiguration=NET, healthCheckGracePeriodSeconds=0,
                       deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100},
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 80}],
                       serviceRegistries=[{"registryArn": registry}])
    ts = wait_until(lambda: len(r := running(ecs, "web")) == 6 and r, timeout=120, what="6 web tasks RUNNING")
    # Spread over the two Fargate hosts, 3 each; every host routes the others' address blocks.
    where = [host_of(servers, t) for t in ts]
    assert sorted(where) == ["fa"] * 3 + ["fb"] * 3, where
    wait_until(lambda: ecs.describe_services(services=["web"])["services"][0]["deployments"][0]["rolloutState"]
               == "COMPLETED", timeout=90, what="the first deployment COMPLETED (targets healthy)")
    # Target health is the leader's (every node's probes reach it): both servers answer alike.
    for s in servers:
        wait_until(lambda: sorted(d["TargetHealth"]["State"] for d in s.client("elbv2").describe_target_health(
            TargetGroupArn=tg)["TargetHealthDescriptions"]) == ["healthy"] * 6, timeout=30,
            what=f"6 healthy targets as {s.endpoint} says")

    # A second service publishes its port through Service Connect (the same namespace).
    ecs.register_task_definition(
        family="sc", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "sc", "image": image, "essential": True,
                               "command": ["sh", "-c", "mkdir -p /w && echo sc-$(hostname) > /w/index.html && exec httpd -f -p 80 -h /w"],
                               "portMappings": [{"name": "http", "containerPort": 80}]}])
    ns_arn = sd.get_namespace(Id=ns)["Namespace"]["Arn"]
    ecs.create_service(serviceName="sc", taskDefinition="sc", desiredCount=2, launchType="FARGATE",
                       networkConfiguration=NET, serviceConnectConfiguration={
                           "enabled": True, "namespace": ns_arn, "services": [{
                               "portName": "http", "discoveryName": "web-sc",
                               "clientAliases": [{"dnsName": "web-sc", "port": 8080}]}]})
    wait_until(lambda: len(running(ecs, "sc")) == 2, timeout=90, what="2 sc tasks RUNNING")

    # A task on the EXTERNAL host (bridge mode) reaches them by address, through the load
    # balancer's DNS name, through the Cloud Map name and through the Service Connect alias.
    target = private_ip(ts[0])
    client = ecs.register_task_definition(
        family="client", networkMode="bridge", requiresCompatibilities=["EXTERNAL"], cpu="128", memory="128",
        containerDefinitions=[{"name": "c", "image": image, "essential": True, "memory": 64, "command": ["sh", "-c",
            f"for u in http://{target}/ http://{lb['DNSName']}/ http://web.many.local/ http://web-sc:8080/; do ok=0; "
            "for i in 1 2 3 4 5 6 7 8 9 10; do if wget -q -O - $u; then ok=1; break; fi; sleep 1; done; "
            "[ $ok = 1 ] || exit 4; done"]}])["taskDefinition"]["taskDefinitionArn"]
    r = ecs.run_task(cluster="edge", taskDefinition=client, launchType="EXTERNAL")
    assert not r["failures"], r
    c = wait_task(ecs, r["tasks"][0]["taskArn"], "STOPPED", cluster="edge", timeout=90)
    assert c["containers"][0].get("exitCode") == 0, (c["containers"], hosts["ex"].log()[-3000:])

    # One etcd member down: writes and reads keep working, through either server.
    etcd.kill("m2")
    probe = unique("probe")
    s1.client().create_cluster(clusterName=probe)
    assert s2.client().describe_clusters(clusters=[probe])["clusters"][0]["status"] == "ACTIVE"

    # A new revision rolls out; the leader is killed in the middle; the other server takes
    # over and the rollout completes.
    leader = s1 if health(s1)["leader"] else s2
    other = s2 if leader is s1 else s1
    ecs = other.client()
    r2 = register("v2")
    ecs.update_service(service="web", taskDefinition=f"web:{r2}")
    wait_until(lambda: running(ecs, "web", r2), timeout=60, what="the first v2 task RUNNING")
    leader.kill9()
    wait_until(lambda: health(other)["leader"], timeout=15, what="the other server leading")
    wait_until(lambda: len(running(ecs, "web", r2)) == 6 and not running(ecs, "web", r1), timeout=180,
               what="the rollout to v2 complete under the new leader")
    wait_until(lambda: ecs.describe_services(services=["web"])["services"][0]["deployments"][0]["rolloutState"]
               == "COMPLETED", timeout=90, what="the v2 deployment COMPLETED")

    # Host fb's link goes down: its Fargate tasks are stopped after the lease and replaced on fa.
    lost = [t["taskArn"] for t in running(ecs, "web") if host_of([other], t) == "fb"]
    assert lost
    hosts["fb"].run("ip", "link", "set", "eth0", "down")
    cut = time.time()

    def replaced():
        ts = running(ecs, "web")
        return len(ts) == 6 and not {t["taskArn"] for t in ts} & set(lost) and ts
    ts = wait_until(replaced, timeout=LEASE + 40, interval=0.5, what="fb's tasks replaced on fa")
    assert time.time() - cut < LEASE + 10 + 15, "replaced later than the lease plus 10 s (and the tasks' start)"
    # Stopped as lost (after the node lease), or, when the load balancers' health checks from
    # the other hosts see them fail first, replaced for failing them: both are ECS's answers
    # to a machine that fell off the network.
    stopped = ecs.describe_tasks(tasks=lost)["tasks"]
    assert all(t["lastStatus"] == "STOPPED" and (
        t["stopCode"] == "TerminationNotice" and "fb" in t["stoppedReason"]
        or t["stopCode"] == "ServiceSchedulerInitiated" and "ELB health checks" in t["stoppedReason"])
        for t in stopped), [(t["lastStatus"], t.get("stopCode"), t.get("stoppedReason")) for t in stopped]
    assert {host_of([other], t) for t in ts} == {"fa"}
    hosts["fb"].run("ip", "link", "set", "eth0", "up")
