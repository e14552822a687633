"""Task networking: awsvpc tasks with their own addresses on the default VPC, bridge tasks
with published ports, host and none modes, public IPs, NAT beyond the host, what the task
sees inside (hostname, /etc/hosts, resolv.conf, extraHosts), and clean-up after tasks stop
and after a kill -9.

Every test runs in a network namespace of its own with no route out: the test's thread moves
into a fresh namespace (with only loopback) before it starts its server, so the server, its
bridges, veths and published ports, and every packet the test sends live there and vanish
with it. Needs root; `cargo xtask test` runs the suite inside a no-route namespace as well."""

import contextlib
import ctypes
import json
import os
import re
import subprocess

import pytest

import images as img
from conftest import BIN, Estiba, SessionEtcd, isolated, join_ec2, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root"),
    pytest.mark.skipif(not isolated(), reason="network tests run inside a network namespace with no route out (use cargo xtask test)"),
]

CLONE_NEWNET = 0x40000000
SUBNET = "subnet-0123456789abcdef0"  # not one of estiba's: mapped onto the default VPC
NET = {"awsvpcConfiguration": {"subnets": [SUBNET], "securityGroups": ["sg-12345678"]}}
SERVE = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
HTTPD = "mkdir -p /www && echo \"$MSG\" > /www/index.html && exec httpd -f -p {port} -h /www"


@contextlib.contextmanager
def own_netns():
    """Moves the calling thread into a new network namespace (loopback only) for the block.
    Processes it starts are born there; the thread returns to its namespace afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    moved = False
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        moved = True
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        yield
    finally:
        if moved:
            # With ESTIBA_TEST_STORE=etcd, the namespace's own etcd (its servers are stopped).
            SessionEtcd.stop_netns()
        if libc.setns(before, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(before)


class Node:
    """A server that runs tasks, in the test's own namespace, with busybox in its registry
    and the cluster `ec2` joined by its own machine (for bridge and host tasks)."""

    def __init__(self, tmp_path, extra_args=()):
        # The test has the namespace to itself: the default networks (VPC 172.31.0.0/16).
        self.e = Estiba(str(tmp_path / "srv"), node=True,
                        extra_args=["--join-cluster", "ec2", "--vpc-cidr", "172.31.0.0/16", *extra_args]).start()
        self.ecs = self.e.client()
        self.e.client("ecr").create_repository(repositoryName="busybox")
        self.image = img.busybox_image(img.Registry(self.e.endpoint), "busybox", "latest")
        join_ec2(self.ecs)

    def register(self, containers, mode="awsvpc", **kw):
        fam = unique("f")
        for c in containers:
            c.setdefault("image", self.image)
            c.setdefault("stopTimeout", 2)
            if mode != "awsvpc":
                c.setdefault("memory", 64)
        args = dict(family=fam, networkMode=mode, containerDefinitions=containers)
        if mode == "awsvpc":
            args.update(requiresCompatibilities=["FARGATE"], cpu="256", memory="512")
        args.update(kw)
        self.ecs.register_task_definition(**args)
        return fam

    def run(self, fam, **kw):
        if "launchType" not in kw and "cluster" not in kw:
            kw["networkConfiguration"] = kw.get("networkConfiguration", NET)
        r = self.ecs.run_task(taskDefinition=fam, **kw)
        assert r["failures"] == [], r["failures"]
        return r["tasks"][0]["taskArn"]

    def run_ec2(self, fam):
        return self.run(fam, cluster="ec2", launchType="EC2")

    def describe(self, arn):
        cluster = arn.split("/")[1]
        return self.ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]

    def wait(self, arn, status, timeout=60):
        return wait_until(lambda: (t := self.describe(arn))["lastStatus"] == status and t, timeout=timeout,
                          what=f"task {status}")

    def logs(self, arn):
        return subprocess.run([BIN, "logs", arn, "--data-dir", self.e.data_dir], capture_output=True, text=True,
                              timeout=30).stdout

    def stop_all(self):
        self.e.drain()
        self.e.stop()


@pytest.fixture
def node(tmp_path):
    with own_netns():
        n = Node(tmp_path)
        try:
            yield n
        finally:
            n.stop_all()


def eni(task):
    [a] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    return {d["name"]: d["value"] for d in a["details"]}


def fetch(url, timeout=20):
    """GETs `url` from the test's namespace, retrying while the server inside starts."""
    import urllib.request

    def get():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode().strip()
        except OSError:
            return None
    return wait_until(get, timeout=timeout, what=f"an answer from {url}")


def links():
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {l["ifname"] for l in json.loads(out)}


def test_awsvpc_tasks_get_addresses_and_reach_each_other(node):
    fam_srv = node.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=8080)],
                              "environment": [{"name": "MSG", "value": "hello from a"}],
                              "portMappings": [{"containerPort": 8080}]}])
    a = node.run(fam_srv)
    ta = node.wait(a, "RUNNING")
    d = eni(ta)
    ip = d["privateIPv4Address"]
    # The default VPC is 172.31.0.0/16; an unknown subnet id maps onto its first subnet, whose
    # first four addresses AWS keeps.
    assert ip.startswith("172.31.") and int(ip.split(".")[2]) < 16, d
    assert d["subnetId"] == SUBNET
    assert d["networkInterfaceId"].startswith("eni-") and len(d["networkInterfaceId"]) == 21
    o = [int(x) for x in ip.split(".")]
    assert d["macAddress"] == "0a:58:" + ":".join(f"{x:02x}" for x in o)
    assert d["privateDnsName"] == f"ip-{ip.replace('.', '-')}.ec2.internal"
    assert ta["attachments"][0]["status"] == "ATTACHED"
    [c] = ta["containers"]
    assert c["networkInterfaces"] == [{"attachmentId": ta["attachments"][0]["id"], "privateIpv4Address": ip}]
    assert not c.get("networkBindings"), "no public IP, nothing published"
    # The test's namespace is the host: it reaches the task through the VPC's bridge.
    assert fetch(f"http://{ip}:8080/") == "hello from a"

    # A second task reaches the first by its private address, and sees its own name.
    fam_cli = node.register([{"name": "cli", "command": ["sh", "-c",
                              f"hostname; cat /etc/hosts; wget -q -O- http://{ip}:8080/ && echo fetched-ok"]}])
    b = node.run(fam_cli)
    tb = node.wait(b, "STOPPED")
    assert tb["containers"][0]["exitCode"] == 0, (tb.get("stoppedReason"), node.logs(b))
    ip_b = eni(tb)["privateIPv4Address"]
    assert ip_b != ip
    out = node.logs(b)
    assert "hello from a" in out and "fetched-ok" in out, out
    name_b = f"ip-{ip_b.replace('.', '-')}.ec2.internal"
    assert name_b in out and f"{ip_b}\t{name_b}" in out, out
    # The attachment is DELETED once the task stopped, and its details stay.
    assert tb["attachments"][0]["status"] == "DELETED"


def test_two_containers_of_a_task_talk_over_localhost_and_none_has_only_loopback(node):
    fam = node.register([
        {"name": "srv", "command": ["sh", "-c", HTTPD.format(port=9000)], "environment": [{"name": "MSG", "value": "local"}]},
        {"name": "cli", "essential": False,
         "command": ["sh", "-c", "for i in $(seq 50); do wget -q -O- http://localhost:9000/ && exit 0; sleep 0.1; done; exit 1"]},
    ])
    t = node.wait(node.run(fam), "RUNNING")
    wait_until(lambda: [c for c in node.describe(t["taskArn"])["containers"] if c["name"] == "cli"][0].get("exitCode") == 0,
               timeout=30, what="cli fetched over localhost")
    # networkMode none: loopback only, no address, nothing reported.
    fam = node.register([{"name": "app", "command": ["sh", "-c", "cat /proc/net/dev; hostname"]}], mode="none",
                        requiresCompatibilities=["EC2"])
    t = node.wait(node.run_ec2(fam), "STOPPED")
    assert t["containers"][0]["exitCode"] == 0
    devs = [l.split(":")[0].strip() for l in node.logs(t["taskArn"]).splitlines() if ":" in l and "|" not in l]
    assert "lo" in devs and "eth0" not in devs, devs


def test_bridge_static_and_dynamic_ports_answer_from_loopback_and_conflicts_fail_placement(node):
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=80) + " & " + HTTPD.format(port=81).replace("/www", "/w2") + " & wait"],
                          "environment": [{"name": "MSG", "value": "bridged"}],
                          "portMappings": [{"containerPort": 80, "hostPort": 18080}, {"containerPort": 81}]}],
                        mode="bridge", requiresCompatibilities=["EC2"])
    arn = node.run_ec2(fam)
    t = node.wait(arn, "RUNNING")
    binds = {b["containerPort"]: b for b in t["containers"][0]["networkBindings"]}
    assert binds[80]["hostPort"] == 18080 and binds[80]["bindIP"] == "0.0.0.0" and binds[80]["protocol"] == "tcp"
    dynamic = binds[81]["hostPort"]
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert lo <= dynamic <= hi, dynamic
    assert fetch("http://127.0.0.1:18080/") == "bridged"
    assert fetch(f"http://127.0.0.1:{dynamic}/") == "bridged"
    assert t["containerInstanceArn"], "placed on the joined instance"
    assert "attachments" not in t or not t["attachments"], "bridge tasks have no ENI"

    # The static host port is taken on the only instance: placement fails, nothing starts.
    r = node.ecs.run_task(cluster="ec2", taskDefinition=fam, launchType="EC2")
    assert r["tasks"] == [] and [f["reason"] for f in r["failures"]] == ["RESOURCE:PORTS"], r
    # A task with only a dynamic port places fine beside it.
    fam2 = node.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=80)],
                           "environment": [{"name": "MSG", "value": "second"}], "portMappings": [{"containerPort": 80}]}],
                         mode="bridge", requiresCompatibilities=["EC2"])
    t2 = node.wait(node.run_ec2(fam2), "RUNNING")
    p2 = t2["containers"][0]["networkBindings"][0]["hostPort"]
    assert p2 not in (18080, dynamic)
    assert fetch(f"http://127.0.0.1:{p2}/") == "second"
    # Once the first task stopped, its static port is free again and closed.
    node.ecs.stop_task(cluster="ec2", task=arn)
    node.wait(arn, "STOPPED")
    with pytest.raises(OSError):
        import socket
        socket.create_connection(("127.0.0.1", 18080), timeout=2).close()
    t3 = node.wait(node.run_ec2(fam), "RUNNING")
    assert t3["containers"][0]["networkBindings"][0]["hostPort"] == 18080
    assert fetch("http://127.0.0.1:18080/") == "bridged"


def test_public_ip_publishes_container_ports_on_the_host(node):
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=8088)],
                          "environment": [{"name": "MSG", "value": "public"}], "portMappings": [{"containerPort": 8088}]}])
    pub = {"awsvpcConfiguration": {"subnets": [SUBNET], "assignPublicIp": "ENABLED"}}
    t1 = node.wait(node.run(fam, networkConfiguration=pub), "RUNNING")
    [b1] = t1["containers"][0]["networkBindings"]
    assert (b1["containerPort"], b1["hostPort"]) == (8088, 8088), "the container's own port when it is free"
    assert fetch("http://127.0.0.1:8088/") == "public"
    # A second public task with the same port gets another host port, and says which.
    t2 = node.wait(node.run(fam, networkConfiguration=pub), "RUNNING")
    [b2] = t2["containers"][0]["networkBindings"]
    assert b2["containerPort"] == 8088 and b2["hostPort"] != 8088
    assert fetch(f"http://127.0.0.1:{b2['hostPort']}/") == "public"


def test_host_mode_shares_the_hosts_network(node):
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=18181)],
                          "environment": [{"name": "MSG", "value": "on the host"}],
                          "portMappings": [{"containerPort": 18181}]}],
                        mode="host", requiresCompatibilities=["EC2"])
    t = node.wait(node.run_ec2(fam), "RUNNING")
    [b] = t["containers"][0]["networkBindings"]
    assert (b["containerPort"], b["hostPort"]) == (18181, 18181)
    assert fetch("http://127.0.0.1:18181/") == "on the host"


def test_extra_hosts_and_docker_labels(node):
    fam = node.register([{"name": "app", "command": ["sh", "-c", "cat /etc/hosts; hostname"],
                          "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.1.2.3"}],
                          "dockerLabels": {"team": "payments"}}], mode="bridge", requiresCompatibilities=["EC2"])
    t = node.wait(node.run_ec2(fam), "STOPPED")
    out = node.logs(t["taskArn"])
    assert "10.1.2.3\tdb.internal" in out, out
    tid = t["taskArn"].rsplit("/", 1)[1]
    spec = json.load(open(os.path.join(node.e.data_dir, "agent", "tasks", tid, "app", "spec.json")))
    assert spec["labels"] == {"team": "payments"}
    # extraHosts is refused with awsvpc, as ECS does.
    with pytest.raises(Exception) as e:
        node.register([{"name": "app", "extraHosts": [{"hostname": "x", "ipAddress": "10.0.0.1"}]}])
    assert "extraHosts" in str(e.value)


def test_addresses_are_reused_after_tasks_stop(node):
    fam = node.register([{"name": "app", "command": ["sh", "-c", SERVE]}])
    first = [node.run(fam) for _ in range(3)]
    ips = [eni(node.wait(a, "RUNNING"))["privateIPv4Address"] for a in first]
    assert len(set(ips)) == 3
    for a in first:
        node.ecs.stop_task(task=a)
    for a in first:
        node.wait(a, "STOPPED")
    leases = os.path.join(node.e.data_dir, "net", "ipam", "vpc")
    assert wait_until(lambda: not os.listdir(leases), timeout=10, what="leases released") is True
    again = [eni(node.wait(node.run(fam), "RUNNING"))["privateIPv4Address"] for _ in range(3)]
    assert sorted(again) == sorted(ips), (ips, again)


def leftovers(e):
    """What task networking left: veths, namespace pins, leases, listening ports."""
    found = [f"link {l}" for l in links() if re.fullmatch(r"es[0-9a-f]{12}", l)]
    found += [f"pin {m.split()[4]}" for m in open("/proc/self/mountinfo")
              if m.split()[4].startswith(e.data_dir) and m.split()[4].endswith("/netns")]
    ipam = os.path.join(e.data_dir, "net", "ipam")
    for pool in os.listdir(ipam) if os.path.isdir(ipam) else []:
        found += [f"lease {pool}/{ip}" for ip in os.listdir(os.path.join(ipam, pool))]
    ss = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
    # The server's own listeners (its API, the VPC resolver, the task metadata endpoint) are
    # not a task's, nor is the etcd it keeps its state in (ESTIBA_TEST_STORE=etcd).
    own = (f":{e.port}", "172.31.0.2:53", "169.254.170.2:80") + SessionEtcd.listeners()
    found += [f"listener {l.split()[3]}" for l in ss.splitlines() if not l.split()[3].endswith(own)]
    return found


def test_nothing_left_after_a_kill_9_and_restart(tmp_path):
    with own_netns():
        n = Node(tmp_path)
        try:
            web = n.register([{"name": "web", "command": ["sh", "-c", HTTPD.format(port=80)],
                               "environment": [{"name": "MSG", "value": "survivor"}], "portMappings": [{"containerPort": 80}]}],
                             mode="bridge", requiresCompatibilities=["EC2"])
            vpc = n.register([{"name": "app", "command": ["sh", "-c", HTTPD.format(port=8080)],
                               "environment": [{"name": "MSG", "value": "vpc survivor"}]}])
            b = n.wait(n.run_ec2(web), "RUNNING")
            port = b["containers"][0]["networkBindings"][0]["hostPort"]
            a = n.wait(n.run(vpc), "RUNNING")
            ip = eni(a)["privateIPv4Address"]
            assert fetch(f"http://127.0.0.1:{port}/") == "survivor"
            # A task that is mid-start when the server dies.
            doomed = n.run(vpc)
            n.e.kill9()
            n.e.start()
            n.ecs = n.e.client()
            # The adopted tasks answer again: the bridge task on the same host port.
            assert fetch(f"http://127.0.0.1:{port}/") == "survivor"
            assert fetch(f"http://{ip}:8080/") == "vpc survivor"
            n.wait(doomed, "RUNNING", timeout=60)
            for arn in (b["taskArn"], a["taskArn"], doomed):
                n.ecs.stop_task(cluster=arn.split("/")[1], task=arn)
            for arn in (b["taskArn"], a["taskArn"], doomed):
                n.wait(arn, "STOPPED")
            assert wait_until(lambda: not leftovers(n.e), timeout=20, what="no leftovers") is True, leftovers(n.e)
        finally:
            n.stop_all()


OUTSIDE_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.2", 8000)); s.listen(1); print("ready", flush=True)
c, peer = s.accept(); c.recv(1024)
c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nseen from " + peer[0].encode() + b"\\n"); c.close()
"""


def test_tasks_reach_beyond_the_host_through_nat(node):
    """An "outside" namespace the test makes, joined to the host by a veth (198.51.100.0/24),
    with no route back to the VPC: a task reaches it only if the host forwards its packets and
    masquerades their source."""
    out = unique("out")
    sh = lambda *a: subprocess.run(list(a), check=True)
    sh("ip", "netns", "add", out)
    try:
        sh("ip", "link", "add", "eo0", "type", "veth", "peer", "name", "eo1", "netns", out)
        sh("ip", "addr", "add", "198.51.100.1/24", "dev", "eo0")
        sh("ip", "link", "set", "eo0", "up")
        sh("ip", "-n", out, "addr", "add", "198.51.100.2/24", "dev", "eo1")
        sh("ip", "-n", out, "link", "set", "eo1", "up")
        srv = subprocess.Popen(["ip", "netns", "exec", out, "python3", "-c", OUTSIDE_SERVER], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        fam = node.register([{"name": "app", "command": ["wget", "-q", "-O-", "http://198.51.100.2:8000/"]}])
        t = node.wait(node.run(fam), "STOPPED")
        assert t["containers"][0]["exitCode"] == 0, node.logs(t["taskArn"])
        assert "seen from 198.51.100.1" in node.logs(t["taskArn"]), "the task's address is masqueraded behind the host's"
        srv.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", out])


def test_a_known_subnet_gives_addresses_from_its_cidr(node):
    ec2 = node.e.client("ec2")
    [b] = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}])["Subnets"]
    [sg] = ec2.describe_security_groups()["SecurityGroups"]
    fam = node.register([{"name": "app", "command": ["sh", "-c", SERVE]}])
    t = node.wait(node.run(fam, networkConfiguration={"awsvpcConfiguration": {"subnets": [b["SubnetId"]], "securityGroups": [sg["GroupId"]]}}), "RUNNING")
    d = eni(t)
    assert d["subnetId"] == b["SubnetId"]
    assert d["privateIPv4Address"].startswith("172.31.16."), d
