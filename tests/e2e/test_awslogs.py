"""The awslogs log driver: containers' stdout and stderr in CloudWatch Logs, read back with
boto3's GetLogEvents, as ECS on Fargate delivers them.

Needs root, and runs only inside a network namespace with no route out (`cargo xtask test`
runs the suite in one), since tasks get network namespaces of their own."""

import os
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import BIN, Estiba, error_code, error_message, isolated, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}

MISSING_GROUP = ("ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: "
                 "failed to create Cloudwatch log stream: ResourceNotFoundException: The specified log group does not exist. : exit status 1")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    e = Estiba(str(tmp_path_factory.mktemp("node")), node=True).start()
    yield e
    e.stop()


def awslogs(group, prefix="ecs", **opts):
    o = {"awslogs-group": group, "awslogs-region": "us-east-1"}
    if prefix is not None:
        o["awslogs-stream-prefix"] = prefix
    o.update(opts)
    return {"logDriver": "awslogs", "options": o}


def register(ecs, containers, image):
    fam = unique("f")
    for c in containers:
        c.setdefault("image", image)
    ecs.register_task_definition(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
                                 memory="512", containerDefinitions=containers)
    return fam


def run(ecs, fam):
    r = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)
    assert r["failures"] == [], r["failures"]
    return r["tasks"][0]["taskArn"]


def describe(ecs, arn):
    return ecs.describe_tasks(tasks=[arn])["tasks"][0]


def wait_status(ecs, arn, status, timeout=60):
    return wait_until(lambda: (t := describe(ecs, arn))["lastStatus"] == status and t, timeout=timeout, what=f"task {status}")


def events(logs, group, stream):
    """Every event of a stream, oldest first, following the forward token to its end."""
    out, kw = [], dict(logGroupName=group, logStreamName=stream, startFromHead=True)
    while True:
        r = logs.get_log_events(**kw)
        out += r["events"]
        if not r["events"] or r["nextForwardToken"] == kw.get("nextToken"):
            return out
        kw["nextToken"] = r["nextForwardToken"]


def task_id(arn):
    return arn.rsplit("/", 1)[1]


def test_every_line_in_order_before_the_task_stops(node, busybox):
    ecs, logs = node.client(), node.client("logs")
    group = f"/ecs/{unique('lines')}"
    script = "i=1; while [ $i -le 2000 ]; do echo line-$i; if [ $((i % 100)) = 0 ]; then echo err-$i >&2; fi; i=$((i+1)); done"
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", script],
                          "logConfiguration": awslogs(group, **{"awslogs-create-group": "true"})}], busybox)
    t0 = time.time()
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "EssentialContainerExited", t.get("stoppedReason")
    # Read right after STOPPED: the last lines were shipped before the task reported it.
    stream = f"ecs/app/{task_id(arn)}"
    got = events(logs, group, stream)
    messages = [e["message"] for e in got]
    assert [m for m in messages if m.startswith("line-")] == [f"line-{i}" for i in range(1, 2001)]
    assert [m for m in messages if m.startswith("err-")] == [f"err-{i}" for i in range(100, 2001, 100)]
    assert len(messages) == 2020
    stamps = [e["timestamp"] for e in got]
    assert stamps == sorted(stamps) and t0 * 1000 - 5000 <= stamps[0] <= time.time() * 1000
    # The group was created (awslogs-create-group), with its stream.
    g = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [x["logGroupName"] for x in g] == [group]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert [s["logStreamName"] for s in streams] == [stream]
    # `estiba logs` reads the container's own log file as before.
    out = subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True, timeout=30)
    assert "line-2000" in out.stdout and "err-2000" in out.stderr


def test_a_missing_group_fails_the_task_as_ecs_does(node, busybox):
    ecs = node.client()
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", "echo never"],
                          "logConfiguration": awslogs(f"/missing/{unique('g')}")}], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"] == MISSING_GROUP
    assert "startedAt" not in t


def test_an_existing_group_without_create_group(node, busybox):
    ecs, logs = node.client(), node.client("logs")
    group = f"/ecs/{unique('existing')}"
    logs.create_log_group(logGroupName=group)
    fam = register(ecs, [{"name": "web", "command": ["sh", "-c", "echo hello; echo oops >&2"],
                          "logConfiguration": awslogs(group, prefix="svc")}], busybox)
    arn = run(ecs, fam)
    wait_status(ecs, arn, "STOPPED")
    assert sorted(e["message"] for e in events(logs, group, f"svc/web/{task_id(arn)}")) == ["hello", "oops"]


def test_racing_tasks_create_one_group(node, busybox):
    ecs, logs = node.client(), node.client("logs")
    group = f"/ecs/{unique('race')}"
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", "echo hi"],
                          "logConfiguration": awslogs(group, **{"awslogs-create-group": "true"})}], busybox)
    arns = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, count=5)["tasks"]
    for t in arns:
        assert wait_status(ecs, t["taskArn"], "STOPPED")["stopCode"] == "EssentialContainerExited"
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]] == [group]
    for t in arns:
        assert [e["message"] for e in events(logs, group, f"ecs/app/{task_id(t['taskArn'])}")] == ["hi"]


def test_multiline_pattern_and_datetime_format_join_lines(node, busybox):
    ecs, logs = node.client(), node.client("logs")
    group = f"/ecs/{unique('multi')}"
    create = {"awslogs-create-group": "true"}
    trace = "echo 'INFO start'; echo '  at a'; echo '  at b'; echo 'INFO next'; echo 'ERROR x'; echo '  caused by y'"
    dated = "echo '2024-01-02 10:00:00 one'; echo '  more'; echo '2024-01-02 10:00:01 two'"
    fam = register(ecs, [
        {"name": "pat", "command": ["sh", "-c", trace],
         "logConfiguration": awslogs(group, **create, **{"awslogs-multiline-pattern": "^(INFO|ERROR)"})},
        {"name": "date", "command": ["sh", "-c", dated], "essential": False,
         "logConfiguration": awslogs(group, **create, **{"awslogs-datetime-format": "%Y-%m-%d %H:%M:%S"})},
    ], busybox)
    arn = run(ecs, fam)
    wait_status(ecs, arn, "STOPPED")
    # Docker's form: each joined line ends with a newline.
    assert [e["message"] for e in events(logs, group, f"ecs/pat/{task_id(arn)}")] == [
        "INFO start\n  at a\n  at b\n", "INFO next\n", "ERROR x\n  caused by y\n"]
    assert [e["message"] for e in events(logs, group, f"ecs/date/{task_id(arn)}")] == [
        "2024-01-02 10:00:00 one\n  more\n", "2024-01-02 10:00:01 two\n"]


def test_register_task_definition_checks_awslogs_options(node):
    ecs = node.client()

    def reg(options):
        ecs.register_task_definition(family=unique("f"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
                                     cpu="256", memory="512", containerDefinitions=[
                                         {"name": "a", "image": "busybox", "logConfiguration": {"logDriver": "awslogs", "options": options}}])

    with pytest.raises(ClientError) as e:
        reg({"awslogs-group": "g", "awslogs-region": "us-east-1"})
    assert error_code(e) == "ClientException"
    assert error_message(e) == "Fargate requires log configuration options to include awslogs-stream-prefix to support log driver awslogs."
    with pytest.raises(ClientError) as e:
        reg({"awslogs-group": "g", "awslogs-stream-prefix": "p", "awslogs-colour": "blue"})
    assert "unknown log opt 'awslogs-colour' for awslogs log driver" in error_message(e)
    with pytest.raises(ClientError) as e:
        reg({"awslogs-group": "g", "awslogs-stream-prefix": "p", "mode": "sometimes"})
    assert "logging mode not supported: sometimes" in error_message(e)
    with pytest.raises(ClientError) as e:
        reg({"awslogs-group": "g", "awslogs-stream-prefix": "p", "mode": "non-blocking", "max-buffer-size": "lots"})
    assert "invalid size: 'lots'" in error_message(e)
    reg({"awslogs-group": "g", "awslogs-stream-prefix": "p", "mode": "non-blocking", "max-buffer-size": "25m"})


def test_kill_9_of_the_server_loses_and_duplicates_no_line(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), node=True).start()
    try:
        ecs, logs = e.client(), e.client("logs")
        group = f"/ecs/{unique('crash')}"
        n = 6000
        script = f"i=1; while [ $i -le {n} ]; do echo seq-$i; if [ $((i % 50)) = 0 ]; then usleep 30000; fi; i=$((i+1)); done"
        fam = register(ecs, [{"name": "app", "command": ["sh", "-c", script],
                              "logConfiguration": awslogs(group, mode="blocking", **{"awslogs-create-group": "true"})}], busybox)
        arn = run(ecs, fam)
        wait_status(ecs, arn, "RUNNING")
        stream = f"ecs/app/{task_id(arn)}"
        # Some lines are shipped, the container goes on printing under its supervisor.
        wait_until(lambda: len(events(logs, group, stream)) > 200, timeout=30, what="lines shipped")
        e.kill9()
        time.sleep(1.5)
        e.start()
        ecs, logs = e.client(), e.client("logs")
        # The container printed on while no server ran, and is adopted still printing.
        assert describe(ecs, arn)["lastStatus"] == "RUNNING"
        wait_status(ecs, arn, "STOPPED", timeout=60)
        got = [x["message"] for x in events(logs, group, stream)]
        assert len(got) == len(set(got)), "no duplicate"
        assert got == [f"seq-{i}" for i in range(1, n + 1)], "no gap"
    finally:
        e.stop()
