"""`estiba agent` on other machines: hosts are network namespaces joined to the test's own
namespace by a bridge (10.77.0.0/24, the server at 10.77.0.1); each host runs an agent that
reaches the server only through the agent API, with a join token.

Needs root, and runs only inside a network namespace with no route out (`cargo xtask test`
runs the suite in one)."""

import glob
import json
import os
import signal
import subprocess
import time

import pytest

import images as img
from conftest import BIN, Estiba, isolated, unique, wait_until
from hosts import FETCH, connected, nodes, private_ip, sh, underlay, wait_task
import hosts


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

BRIDGE = "br-agents"
SERVER_IP = "10.77.0.1"
TOKEN = "join-token-for-the-tests"
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}


class Host(hosts.Host):
    def __init__(self, name, ip, data_dir):
        super().__init__(name, ip, data_dir, BRIDGE)

    def start_agent(self, server, *flags, token=TOKEN):
        return super().start_agent(server, *flags, token=token)


@pytest.fixture(scope="module")
def bridge():
    with underlay(BRIDGE, f"{SERVER_IP}/24") as b:
        yield b


@pytest.fixture(scope="module")
def server(bridge, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("server"))
    tokens = os.path.join(d, "join-tokens")
    with open(tokens, "w") as f:
        f.write(f"# agents of the tests\n{TOKEN}\n")
    e = Estiba(d, extra_args=["--join-tokens", tokens, "--node-lease", "10s"], host=SERVER_IP).start()
    e.tokens = tokens
    e.client().create_cluster()
    yield e
    e.drain()
    e.stop()


@pytest.fixture(scope="module")
def busybox(server):
    server.client("ecr").create_repository(repositoryName="busybox")
    return img.busybox_image(img.Registry(server.endpoint), "busybox", "latest")


@pytest.fixture(scope="module")
def fargate_host(server, tmp_path_factory):
    h = Host("host-a", "10.77.0.11", str(tmp_path_factory.mktemp("host-a"))).start_agent(server, "--fargate")
    node = connected(server, h)
    assert node["fargate"] and node["remote"] and node["address"] == h.ip, node
    yield h
    server.drain()
    h.close()


@pytest.fixture(scope="module")
def instance_host(server, tmp_path_factory):
    ecs = server.client()
    ecs.create_cluster(clusterName="edge")
    h = Host("host-b", "10.77.0.12", str(tmp_path_factory.mktemp("host-b"))).start_agent(
        server, "--cluster", "edge", "--external", "--attribute", "ecs.availability-zone=us-east-1b",
        "--attribute", "team=blue")
    yield h
    server.drain()
    h.close()


def agent_api(server, method, path, token=TOKEN, body=None):
    return hosts.agent_api(server, method, path, token, body)

def test_only_a_known_join_token_gets_anything(server):
    assert agent_api(server, "GET", "nodes/x/assignments", token=None)[0] == 401
    status, body = agent_api(server, "GET", "nodes/x/assignments", token="nope")
    assert status == 401 and b"not valid" in body
    assert agent_api(server, "PUT", "nodes/x", token="nope", body=b"{}")[0] == 401
    # A known token with a body that is no node status: refused, nothing written.
    assert agent_api(server, "PUT", "nodes/x", body=b"not json")[0] == 400
    assert agent_api(server, "POST", "nodes/x/nothing", body=b"{}")[0] == 404
    # A token removed from the file is refused from then on.
    with open(server.tokens, "a") as f:
        f.write("second-token\n")
    assert agent_api(server, "PUT", "nodes/x", token="second-token", body=b"nonsense")[0] == 400
    with open(server.tokens, "w") as f:
        f.write(f"{TOKEN}\n")
    os.utime(server.tokens, (time.time() + 2, time.time() + 2))
    assert agent_api(server, "PUT", "nodes/x", token="second-token", body=b"nonsense")[0] == 401


def test_a_fargate_task_runs_on_the_agents_host(server, busybox, fargate_host):
    ecs = server.client()
    fam = unique("web")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "web", "image": busybox, "essential": True,
                               "command": ["sh", "-c", "mkdir -p /w && echo hello-from-$(hostname) > /w/index.html && exec httpd -f -p 80 -h /w"],
                               "portMappings": [{"containerPort": 80}]}])
    arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
    try:
        t = wait_task(ecs, arn, "RUNNING")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- agent:\n{fargate_host.log()}\n--- server:\n{server.log()}")
    ip = private_ip(t)
    assert ip, t
    # The task's address is on host A's VPC bridge: reachable from that host...
    out = fargate_host.run("python3", "-c", FETCH, f"http://{ip}/")
    assert out.stdout.startswith("hello-from-"), out
    # ...and not from the server's machine, where nothing runs tasks.
    assert sh("python3", "-c", FETCH, f"http://{ip}/", check=False).returncode != 0
    ecs.stop_task(task=arn, reason="done")
    t = wait_task(ecs, arn, "STOPPED", timeout=40)
    assert t["stoppedReason"] == "done"


def test_a_killed_agent_adopts_its_running_task(server, busybox, fargate_host):
    ecs = server.client()
    fam = unique("sleeper")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "s", "image": busybox, "command": ["sleep", "600"]}])
    arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
    before = wait_task(ecs, arn, "RUNNING")
    fargate_host.stop_agent(signal.SIGKILL)
    fargate_host.start_agent(server, "--fargate")
    time.sleep(3)
    after = ecs.describe_tasks(tasks=[arn])["tasks"][0]
    assert after["lastStatus"] == "RUNNING" and after["startedAt"] == before["startedAt"], after
    ecs.stop_task(task=arn)
    wait_task(ecs, arn, "STOPPED", timeout=40)


def test_container_logs_from_an_agent_reach_the_logs_api(server, busybox, fargate_host):
    ecs, logs = server.client(), server.client("logs")
    group = unique("/ecs/agent")
    fam = unique("talker")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "talk", "image": busybox, "command": ["sh", "-c", "for i in 1 2 3; do echo line-$i; done"],
                               "logConfiguration": {"logDriver": "awslogs", "options": {
                                   "awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs",
                                   "awslogs-create-group": "true"}}}])
    arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
    wait_task(ecs, arn, "STOPPED", timeout=60)
    stream = f"ecs/talk/{arn.rsplit('/', 1)[1]}"
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["line-1", "line-2", "line-3"]


def test_exec_into_a_task_on_the_agents_host(server, busybox, fargate_host):
    """ECS Exec reaches a task on another machine: the agent keeps a stream of exec requests
    open on the server and dials back for each session, over the agent API."""
    ecs = server.client()
    fam = unique("execd")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        taskRoleArn="arn:aws:iam::000000000000:role/app",
        containerDefinitions=[{"name": "app", "image": busybox,
                               "command": ["sh", "-c", "echo made-on-$(hostname) > /tmp/mark && exec sleep 600"]}])
    arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET,
                       enableExecuteCommand=True)["tasks"][0]["taskArn"]
    wait_task(ecs, arn, "RUNNING")
    try:
        env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        p = subprocess.run([BIN, "exec", "--endpoint-url", server.endpoint, "default", arn, "--",
                            "sh", "-c", "cat /tmp/mark; echo ran-on-$(hostname); exit 7"],
                           input=b"", capture_output=True, timeout=60, env=env)
        assert p.returncode == 7, (p.stdout, p.stderr, fargate_host.log())
        out = p.stdout.decode()
        host = out.split("made-on-", 1)[1].split()[0]
        assert f"ran-on-{host}" in out, out
        # A dial-back must upgrade, and only for a session waiting for the dialing node.
        assert agent_api(server, "POST", "nodes/other-node/exec/ecs-execute-command-0", body=b"")[0] == 400
    finally:
        ecs.stop_task(task=arn)
        wait_task(ecs, arn, "STOPPED", timeout=40)


def test_secrets_reach_a_task_on_the_agents_host(server, busybox, fargate_host):
    """The agent asks the server for its task's secrets (it never reads the store); the server
    answers only for tasks claimed by the asking node."""
    ecs, logs, ssm, sm = server.client(), server.client("logs"), server.client("ssm"), server.client("secretsmanager")
    param = f"/{unique('agent')}/token"
    ssm.put_parameter(Name=param, Value="ssm-on-agent", Type="SecureString")
    secret = sm.create_secret(Name=unique("agent"), SecretString='{"pw":"asm-on-agent"}')["ARN"]
    group = unique("/ecs/secrets")
    fam = unique("secrets")
    ecs.register_task_definition(
        family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
        containerDefinitions=[{"name": "app", "image": busybox, "command": ["sh", "-c", "echo $A $B"],
                               "secrets": [{"name": "A", "valueFrom": param}, {"name": "B", "valueFrom": secret + ":pw::"}],
                               "logConfiguration": {"logDriver": "awslogs", "options": {
                                   "awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs",
                                   "awslogs-create-group": "true"}}}])
    arn = ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
    t = wait_task(ecs, arn, "STOPPED", timeout=60)
    assert t["stopCode"] == "EssentialContainerExited", (t.get("stoppedReason"), fargate_host.log())
    stream = f"ecs/app/{arn.rsplit('/', 1)[1]}"
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["ssm-on-agent asm-on-agent"]
    # Another node asking for this task's secrets gets a refusal, not the values.
    key = f"ecs/000000000000/us-east-1/tasks/default/{arn.rsplit('/', 1)[1]}"
    status, body = agent_api(server, "POST", "nodes/other-node/secrets", body=json.dumps({"taskKey": key}).encode())
    assert status == 200 and b"Err" in body and b"ssm-on-agent" not in body, body


def test_tasks_on_different_hosts_reach_each_other_by_private_address(server, busybox, fargate_host, tmp_path_factory):
    """Each host hands out addresses from its own blocks of the subnet and routes the other
    hosts' blocks to them: a task on host D fetches from a task on host A by its address.
    Host D is in us-east-1b: Fargate tasks in that zone's subnet go there, others to host A."""
    ecs = server.client()
    d = Host("host-d", "10.77.0.14", str(tmp_path_factory.mktemp("host-d"))).start_agent(
        server, "--fargate", "--attribute", "ecs.availability-zone=us-east-1b")
    zone_b = [s["SubnetId"] for s in server.client("ec2").describe_subnets()["Subnets"]
              if s["AvailabilityZone"] == "us-east-1b"][0]
    arns = []
    try:
        connected(server, d)
        web = unique("web")
        ecs.register_task_definition(
            family=web, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "web", "image": busybox, "essential": True,
                                   "command": ["sh", "-c", "mkdir -p /w && echo served-by-$(hostname) > /w/index.html && exec httpd -f -p 80 -h /w"],
                                   "portMappings": [{"containerPort": 80}]}])
        arn = ecs.run_task(taskDefinition=web, launchType="FARGATE", networkConfiguration=NET)["tasks"][0]["taskArn"]
        arns.append(arn)
        t = wait_task(ecs, arn, "RUNNING")
        ip = private_ip(t)
        # A task of zone a's subnet does not go to the host of zone b.
        assert arn.rsplit("/", 1)[1] in nodes(server)["host-a"]["tasks"]
        n = nodes(server)
        assert n["host-a"]["address"] == "10.77.0.11" and n["host-d"]["address"] == "10.77.0.14", n
        # From host D's own namespace, through its route to host A's block...
        wait_until(lambda: d.run("python3", "-c", FETCH, f"http://{ip}/", check=False).stdout.startswith("served-by-"),
                   timeout=20, what=f"{ip} reachable from host D")
        # ...and from a task on host D: its neighbour request for the address is answered by
        # its host (proxy ARP) and the packet goes through the underlay.
        client = unique("client")
        ecs.register_task_definition(
            family=client, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "c", "image": busybox, "essential": True,
                                   "command": ["sh", "-c", f"for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://{ip}/ && exit 0; sleep 1; done; exit 3"]}])
        carn = ecs.run_task(taskDefinition=client, launchType="FARGATE",
                            networkConfiguration={"awsvpcConfiguration": {"subnets": [zone_b]}})["tasks"][0]["taskArn"]
        arns.append(carn)
        c = wait_task(ecs, carn, "STOPPED", timeout=60)
        assert c["availabilityZone"] == "us-east-1b"
        assert c["containers"][0].get("exitCode") == 0, (c["containers"], d.log()[-3000:])
        # Its address is in host D's block of zone b's subnet (172.31.16.0/20).
        assert private_ip(c).startswith("172.31.1"), private_ip(c)
    finally:
        for a in arns:
            ecs.stop_task(task=a)
        for a in arns:
            wait_task(ecs, a, "STOPPED", timeout=40)
        d.close()


def test_an_external_instance_joins_and_runs_its_tasks(server, busybox, instance_host):
    ecs = server.client()

    def joined():
        arns = ecs.list_container_instances(cluster="edge")["containerInstanceArns"]
        return ecs.describe_container_instances(cluster="edge", containerInstances=arns)["containerInstances"] if arns else None
    ci = wait_until(joined, timeout=30, what="the agent's container instance")[0]
    assert ci["status"] == "ACTIVE" and ci["agentConnected"], ci
    assert ci["ec2InstanceId"].startswith("mi-"), ci
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["team"] == "blue" and attrs["ecs.availability-zone"] == "us-east-1b", attrs
    assert attrs["estiba.node-id"] == "host-b"
    fam = unique("edge")
    ecs.register_task_definition(
        family=fam, networkMode="bridge", requiresCompatibilities=["EXTERNAL"], cpu="128", memory="128",
        containerDefinitions=[{"name": "s", "image": busybox, "command": ["sleep", "600"], "memory": 64}])
    r = ecs.run_task(cluster="edge", taskDefinition=fam, launchType="EXTERNAL")
    assert not r["failures"], r
    arn = r["tasks"][0]["taskArn"]
    t = wait_task(ecs, arn, "RUNNING", cluster="edge")
    assert t["containerInstanceArn"] == ci["containerInstanceArn"]
    ecs.stop_task(cluster="edge", task=arn)
    wait_task(ecs, arn, "STOPPED", cluster="edge", timeout=40)


def live_containers(host, task_id):
    """Pids of the task's container processes on `host` that are alive (from the state their
    supervisors record in the agent's data dir)."""
    pids = []
    for started in glob.glob(os.path.join(host.data_dir, "agent", "tasks", task_id, "*", "started.json")):
        with open(started) as f:
            pid = json.load(f)["pid"]
        if os.path.exists(f"/proc/{pid}"):
            pids.append(pid)
    return pids


def test_a_lost_hosts_fargate_tasks_are_replaced_elsewhere(server, busybox, fargate_host, tmp_path_factory):
    ecs = server.client()
    c = Host("host-c", "10.77.0.13", str(tmp_path_factory.mktemp("host-c"))).start_agent(server, "--fargate")
    try:
        connected(server, c)
        fam, svc = unique("spread"), unique("svc")
        ecs.register_task_definition(
            family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "s", "image": busybox, "command": ["sleep", "600"]}])
        ecs.create_service(serviceName=svc, taskDefinition=fam, desiredCount=2, launchType="FARGATE",
                           networkConfiguration=NET)

        def running():
            arns = ecs.list_tasks(serviceName=svc, desiredStatus="RUNNING")["taskArns"]
            ts = ecs.describe_tasks(tasks=arns)["tasks"] if arns else []
            ok = [t for t in ts if t["lastStatus"] == "RUNNING"]
            return ok if len(ok) == 2 else None
        first = wait_until(running, timeout=60, what="two RUNNING tasks")
        n = nodes(server)
        # Spread: one task on each Fargate host.
        assert len(n["host-a"]["tasks"]) == 1 and len(n["host-c"]["tasks"]) == 1, n
        lost = n["host-c"]["tasks"][0]
        assert live_containers(c, lost)
        # Host C's link goes down: it no longer reports; after the lease (10 s) its task is stopped.
        c.run("ip", "link", "set", "eth0", "down")
        cut = time.time()

        def stopped():
            t = ecs.describe_tasks(tasks=[lost])["tasks"][0]
            return t if t["lastStatus"] == "STOPPED" else None
        t = wait_until(stopped, timeout=25, interval=0.5, what="the lost host's task STOPPED")
        assert time.time() - cut < 10 + 10
        assert "host-c" in t["stoppedReason"] and t["stopCode"] == "TerminationNotice", t
        # The service replaces it on the host that is left.
        again = wait_until(running, timeout=40, what="the service back at two RUNNING tasks")
        assert lost not in [x["taskArn"].rsplit("/", 1)[1] for x in again]
        assert len(nodes(server)["host-a"]["tasks"]) == 2
        # The containers of the lost task kept running on host C while it was cut off...
        assert live_containers(c, lost)
        # ...and stop once it is back and learns the control plane stopped its task.
        c.run("ip", "link", "set", "eth0", "up")
        connected(server, c)
        wait_until(lambda: not live_containers(c, lost), timeout=40, what="host C's containers stopped")
        ecs.delete_service(service=svc, force=True)
        for x in first + again:
            wait_task(ecs, x["taskArn"], "STOPPED", timeout=40)
    finally:
        c.close()
