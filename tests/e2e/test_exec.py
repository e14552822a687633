"""ECS Exec: `enableExecuteCommand` on tasks and services, ExecuteCommand's checks with ECS's
messages, and `estiba exec` running commands inside a real container over the Session
Manager data channel (a websocket on the API listener).

Needs root, and runs only inside a network namespace with no route out (tasks get network
namespaces of their own)."""

import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import BIN, error_code, error_message, isolated, running_node, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
ROLE = "arn:aws:iam::000000000000:role/app"
NOT_ENABLED = ("The execute command failed because execute command was not enabled when the task was run or the "
               "execute command agent isn\u2019t running. Wait and try again or run a new task with execute command "
               "enabled and try again.")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory, name="exec") as e:
        yield e


@pytest.fixture
def ecs(node):
    return node.client()


def register(ecs, image, containers=None, role=True):
    fam = unique("x")
    defs = containers or [{"name": "app", "command": ["sleep", "600"]}]
    for c in defs:
        c.setdefault("image", image)
        c.setdefault("essential", True)
    args = dict(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                containerDefinitions=defs)
    if role:
        args["taskRoleArn"] = ROLE
    ecs.register_task_definition(**args)
    return fam


def run_running(ecs, fam, exec_enabled=True):
    arn = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, enableExecuteCommand=exec_enabled)["tasks"][0]["taskArn"]
    wait_until(lambda: ecs.describe_tasks(tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING", timeout=60, what="RUNNING")
    return arn


def estiba_exec(node, arn, *cmd, stdin=b"", container=None, cluster="default"):
    args = [BIN, "exec", "--endpoint-url", node.endpoint, cluster, arn]
    if container:
        args += ["--container", container]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    return subprocess.run(args + ["--"] + list(cmd), input=stdin, capture_output=True, timeout=60, env=env)


def test_run_task_with_exec_needs_a_task_role(ecs, busybox):
    fam = register(ecs, busybox, role=False)
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=fam, networkConfiguration=NET, enableExecuteCommand=True)
    assert error_code(e) == "InvalidParameterException"
    assert error_message(e) == ("The execute command failed because a valid task role is not being used. Specify a "
                                "valid task role in your task definition or as a task override and try again.")
    # A role given as an override is enough.
    t = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, enableExecuteCommand=True,
                     overrides={"taskRoleArn": ROLE})["tasks"][0]
    assert t["enableExecuteCommand"] is True
    ecs.stop_task(task=t["taskArn"])


def test_update_service_toggles_exec_without_a_deployment(ecs, busybox):
    fam = register(ecs, busybox)
    name = unique("s")
    ecs.create_service(serviceName=name, taskDefinition=fam, desiredCount=0, networkConfiguration=NET)
    svc = ecs.update_service(service=name, enableExecuteCommand=True)["service"]
    assert svc["enableExecuteCommand"] is True
    assert len(svc["deployments"]) == 1
    assert ecs.describe_services(services=[name])["services"][0]["enableExecuteCommand"] is True
    bare = register(ecs, busybox, role=False)
    with pytest.raises(ClientError) as e:
        ecs.update_service(service=name, taskDefinition=bare, enableExecuteCommand=True)
    assert error_code(e) == "InvalidParameterException"
    assert "valid taskRoleArn is not being used" in error_message(e)
    ecs.delete_service(service=name, force=True)


def test_execute_command_checks(ecs, busybox):
    fam = register(ecs, busybox)
    off = run_running(ecs, fam, exec_enabled=False)
    on = run_running(ecs, fam)
    try:
        with pytest.raises(ClientError) as e:
            ecs.execute_command(task=on, command="/bin/sh", interactive=False)
        assert (error_code(e), error_message(e)) == ("InvalidParameterException", "Interactive is the only mode supported currently.")
        with pytest.raises(ClientError) as e:
            ecs.execute_command(task=off, command="/bin/sh", interactive=True)
        assert (error_code(e), error_message(e)) == ("InvalidParameterException", NOT_ENABLED)
        with pytest.raises(ClientError) as e:
            ecs.execute_command(task="abc", command="/bin/sh", interactive=True)
        assert (error_code(e), error_message(e)) == ("InvalidParameterException", "task length should be one of [32,36]")
        with pytest.raises(ClientError) as e:
            ecs.execute_command(task=on, command="/bin/sh", interactive=True, container="nope")
        assert error_code(e) == "InvalidParameterException"
        with pytest.raises(ClientError) as e:
            ecs.execute_command(cluster="no-such-cluster", task=on.rsplit("/", 1)[1], command="sh", interactive=True)
        assert error_code(e) == "ClusterNotFoundException"

        t = ecs.describe_tasks(tasks=[on])["tasks"][0]
        assert t["enableExecuteCommand"] is True
        c = t["containers"][0]
        assert c["runtimeId"]
        agents = c["managedAgents"]
        assert [(a["name"], a["lastStatus"]) for a in agents] == [("ExecuteCommandAgent", "RUNNING")]
        assert "managedAgents" not in ecs.describe_tasks(tasks=[off])["tasks"][0]["containers"][0]

        r = ecs.execute_command(task=on, command="/bin/sh", interactive=True)
        assert r["taskArn"] == on and r["containerName"] == "app" and r["interactive"] is True
        assert r["clusterArn"].endswith(":cluster/default") and r["containerArn"] == c["containerArn"]
        s = r["session"]
        assert s["sessionId"].startswith("ecs-execute-command-")
        assert s["streamUrl"].startswith("ws://") and s["sessionId"] in s["streamUrl"]
        assert len(s["tokenValue"]) >= 32
        # The session manager plugin's SSM calls, sent to the ECS endpoint.
        ssm = boto3_ssm(ecs)
        assert ssm.terminate_session(SessionId=s["sessionId"])["SessionId"] == s["sessionId"]
        with pytest.raises(ClientError) as e:
            ssm.resume_session(SessionId=s["sessionId"])
        assert error_code(e) == "DoesNotExistException"
        s2 = ecs.execute_command(task=on, command="/bin/sh", interactive=True)["session"]
        resumed = ssm.resume_session(SessionId=s2["sessionId"])
        assert resumed["StreamUrl"] == s2["streamUrl"] and resumed["TokenValue"] != s2["tokenValue"]
    finally:
        ecs.stop_task(task=off)
        ecs.stop_task(task=on)


def boto3_ssm(ecs):
    import boto3
    return boto3.client("ssm", endpoint_url=ecs.meta.endpoint_url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def test_estiba_exec_runs_in_the_container(node, ecs, busybox):
    fam = register(ecs, busybox, containers=[
        {"name": "app", "command": ["sh", "-c", "echo inside > /marker; sleep 600"]},
        {"name": "side", "command": ["sleep", "600"]},
    ])
    arn = run_running(ecs, fam)
    try:
        p = estiba_exec(node, arn, "sh", "-c", "echo hi; exit 3", container="app")
        assert p.returncode == 3, (p.stdout, p.stderr)
        assert b"hi" in p.stdout

        # The container's own filesystem and hostname, not the host's.
        p = estiba_exec(node, arn, "cat", "/marker", container="app")
        assert p.returncode == 0 and b"inside" in p.stdout, (p.stdout, p.stderr)
        p = estiba_exec(node, arn, "cat", "/marker", container="side")
        assert p.returncode != 0 and b"inside" not in p.stdout
        p = estiba_exec(node, arn, "ls", "/proc/1/cmdline", container="side")
        assert p.returncode == 0

        # Several containers and none named.
        p = estiba_exec(node, arn, "true")
        assert p.returncode != 0 and b"InvalidParameterException" in p.stderr

        # An interactive shell over pipes.
        p = estiba_exec(node, arn, "sh", stdin=b"echo $((6*7))\nexit 5\n", container="app")
        assert p.returncode == 5, (p.stdout, p.stderr)
        assert b"42" in p.stdout.replace(b"$((6*7))", b"")
    finally:
        ecs.stop_task(task=arn)


def _open_channel(url, token):
    """Opens the data channel with `token`; returns the first binary frame's message type."""
    from websockets.sync.client import connect
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"MessageSchemaVersion": "1.0", "RequestId": "r", "TokenValue": token,
                            "ClientId": "c", "ClientVersion": "t"}))
        first = ws.recv(timeout=10)
    return first[4:36].decode().strip()


def test_a_token_is_single_use(node, ecs, busybox):
    fam = register(ecs, busybox)
    arn = run_running(ecs, fam)
    try:
        s = ecs.execute_command(task=arn, command="sleep 30", interactive=True)["session"]
        assert _open_channel(s["streamUrl"], "wrong") == "channel_closed"
        assert _open_channel(s["streamUrl"], s["tokenValue"]) == "output_stream_data"  # the handshake
        # Used once: gone.
        from websockets.exceptions import InvalidStatus
        with pytest.raises(InvalidStatus) as e:
            _open_channel(s["streamUrl"], s["tokenValue"])
        assert e.value.response.status_code == 404
    finally:
        ecs.stop_task(task=arn)


def test_estiba_exec_signs_its_call(tmp_path):
    """With `--credentials`, `estiba exec`'s ExecuteCommand is signed with the key of the
    environment: a good key reaches ECS's checks, a wrong secret is refused."""
    from conftest import Estiba
    creds = tmp_path / "credentials"
    creds.write_text("[alice]\naws_access_key_id = AKIAEXEC00000000001\naws_secret_access_key = exec/secret\n"
                     "account = 111111111111\n")
    e = Estiba(str(tmp_path / "data"), extra_args=["--credentials", str(creds)]).start()
    try:
        def call(secret):
            env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAEXEC00000000001", AWS_SECRET_ACCESS_KEY=secret)
            return subprocess.run([BIN, "exec", "--endpoint-url", e.endpoint, "nope", "0" * 32, "--", "sh"],
                                  capture_output=True, timeout=30, env=env)
        p = call("exec/secret")
        assert p.returncode == 254 and b"(ClusterNotFoundException)" in p.stderr, p.stderr
        p = call("wrong")
        assert p.returncode == 254 and b"(InvalidSignatureException)" in p.stderr, p.stderr
    finally:
        e.stop()
