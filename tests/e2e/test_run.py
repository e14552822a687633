"""Tasks really run: images pulled from a registry on loopback, containers started, watched,
stopped and cleaned up by `estiba server`'s own node.

Needs root, and runs only inside a network namespace with no route out (`cargo xtask test`
runs the suite in one), since tasks get network namespaces of their own."""

import base64
import json
import os
import signal
import subprocess
import tarfile
import time

import pytest

import images as img
from authproxy import AuthProxy
from botocore.exceptions import ClientError

from conftest import BIN, Estiba, error_code, free_port, isolated, unique, wait_until


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory):
    """The operator's environment files directory (`--environment-files-dir`)."""
    return tmp_path_factory.mktemp("envfiles")


@pytest.fixture(scope="module")
def node(tmp_path_factory, env_dir):
    e = Estiba(str(tmp_path_factory.mktemp("node")), extra_args=["--environment-files-dir", str(env_dir)], node=True).start()
    yield e
    e.stop()


@pytest.fixture
def ecs(node):
    return node.client()


def register(ecs, containers, image, **kw):
    fam = unique("f")
    for c in containers:
        c.setdefault("image", image)
    args = dict(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512", containerDefinitions=containers)
    args.update(kw)
    ecs.register_task_definition(**args)
    return fam


def run(ecs, fam, **kw):
    r = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, **kw)
    assert r["failures"] == [], r["failures"]
    return r["tasks"][0]["taskArn"]


def describe(ecs, arn):
    return ecs.describe_tasks(tasks=[arn])["tasks"][0]


def wait_status(ecs, arn, status, timeout=60):
    return wait_until(lambda: (t := describe(ecs, arn))["lastStatus"] == status and t, timeout=timeout, what=f"task {status}")


def container(task, name):
    return next(c for c in task["containers"] if c["name"] == name)


def logs(node, arn, container=None):
    args = [BIN, "logs", arn, "--data-dir", node.data_dir]
    if container:
        args += ["--container", container]
    return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout


STATUSES = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]


def test_lifecycle_timestamps_and_stop(node, ecs, busybox):
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", "echo started; trap 'echo got TERM; exit 0' TERM; while :; do sleep 0.1; done"]}], busybox)
    arn = run(ecs, fam)
    seen = []
    def running():
        t = describe(ecs, arn)
        if not seen or seen[-1] != t["lastStatus"]:
            seen.append(t["lastStatus"])
        return t["lastStatus"] == "RUNNING" and t
    t = wait_until(running, timeout=60, what="RUNNING")
    c = container(t, "app")
    assert c["lastStatus"] == "RUNNING"
    assert c["imageDigest"].startswith("sha256:")
    assert c["runtimeId"]
    assert t["pullStartedAt"] <= t["pullStoppedAt"] <= t["startedAt"]
    assert t["connectivity"] == "CONNECTED"
    assert [STATUSES.index(s) for s in seen] == sorted(STATUSES.index(s) for s in seen), seen
    ecs.stop_task(task=arn, reason="test done")
    t = wait_status(ecs, arn, "STOPPED", timeout=30)
    assert (t["stopCode"], t["stoppedReason"]) == ("UserInitiated", "test done")
    assert t["stoppingAt"] <= t["executionStoppedAt"] <= t["stoppedAt"]
    assert container(t, "app")["exitCode"] == 0, "the container handled SIGTERM"
    assert "started" in logs(node, arn) and "got TERM" in logs(node, arn)


def test_containers_of_a_task_talk_over_localhost(node, ecs, busybox):
    fam = register(ecs, [
        {"name": "web", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"], "essential": False},
        {"name": "client", "command": ["sh", "-c", "for i in $(seq 50); do wget -q -O- http://localhost:8080/ && exit 0; sleep 0.1; done; exit 1"],
         "dependsOn": [{"containerName": "web", "condition": "START"}]},
    ], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert container(t, "client")["exitCode"] == 0
    assert "hello from a busybox image" in logs(node, arn, "client")
    assert (t["stopCode"], t["stoppedReason"]) == ("EssentialContainerExited", "Essential container in task exited")


def test_essential_and_non_essential_exits(node, ecs, busybox):
    fam = register(ecs, [
        {"name": "helper", "command": ["sh", "-c", "exit 3"], "essential": False},
        {"name": "main", "command": ["sleep", "300"], "stopTimeout": 2},
    ], busybox)
    arn = run(ecs, fam)
    t = wait_until(lambda: (x := describe(ecs, arn)) and container(x, "helper")["lastStatus"] == "STOPPED" and x, what="helper stopped")
    assert container(t, "helper")["exitCode"] == 3
    assert t["desiredStatus"] == "RUNNING", "a non-essential exit does not stop the task"
    ecs.stop_task(task=arn)
    t = wait_status(ecs, arn, "STOPPED")
    assert container(t, "main")["exitCode"] == 137, "sleep ignores SIGTERM as PID 1: killed after stopTimeout"


def test_depends_on_conditions(node, ecs, busybox):
    fam = register(ecs, [
        {"name": "init", "command": ["sh", "-c", "sleep 0.3; exit 0"], "essential": False},
        {"name": "checked", "command": ["sleep", "300"], "essential": False, "stopTimeout": 1,
         "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "retries": 1}},
        {"name": "main", "command": ["sh", "-c", "echo main ran; sleep 300"], "stopTimeout": 1,
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}, {"containerName": "checked", "condition": "HEALTHY"}]},
    ], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "RUNNING", timeout=60)
    assert container(t, "init")["exitCode"] == 0
    assert container(t, "checked")["healthStatus"] == "HEALTHY"
    assert container(t, "main")["lastStatus"] == "RUNNING"
    ecs.stop_task(task=arn)
    wait_status(ecs, arn, "STOPPED")
    # SUCCESS that can never happen fails the task.
    fam = register(ecs, [
        {"name": "init", "command": ["sh", "-c", "exit 4"], "essential": False},
        {"name": "main", "command": ["sleep", "300"], "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    ], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart"
    assert "DependencyFailed" in t["stoppedReason"]
    assert container(t, "main").get("exitCode") is None


def test_failing_health_check(node, ecs, busybox):
    fam = register(ecs, [{"name": "app", "command": ["sleep", "300"], "stopTimeout": 1,
                          "healthCheck": {"command": ["CMD", "false"], "interval": 5, "timeout": 2, "retries": 1}}], busybox)
    arn = run(ecs, fam)
    t = wait_until(lambda: (x := describe(ecs, arn))["healthStatus"] == "UNHEALTHY" and x, timeout=30, what="UNHEALTHY")
    assert container(t, "app")["healthStatus"] == "UNHEALTHY"
    ecs.stop_task(task=arn)
    wait_status(ecs, arn, "STOPPED")


def test_out_of_memory(node, ecs, busybox):
    fam = register(ecs, [{"name": "hog", "memory": 32, "command": ["sh", "-c", "exec dd if=/dev/zero of=/dev/null bs=256M count=1"]}], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    c = container(t, "hog")
    assert c["exitCode"] == 137
    assert c["reason"] == "OutOfMemoryError: Container killed due to memory usage"


def test_container_settings(node, ecs, busybox, env_dir):
    (env_dir / "conf").mkdir(exist_ok=True)
    (env_dir / "conf" / "app.env").write_text("# settings\nFROM_FILE=file\nBOTH=file\n")
    script = "; ".join([
        "echo env=$FROM_FILE,$BOTH,$FROM_DEF,$OVERRIDDEN",
        "echo cwd=$(pwd)",
        "echo uid=$(id -u)",
        "echo nofile=$(ulimit -n)",
        "touch /probe 2>/dev/null && echo rootfs=rw || echo rootfs=ro",
        "echo pid1=$(cat /proc/1/comm)",
        "echo args=$0,$1",
    ])
    fam = register(ecs, [{
        "name": "app",
        "entryPoint": ["sh", "-c", script],
        "command": ["zero", "one"],
        "environment": [{"name": "BOTH", "value": "def"}, {"name": "FROM_DEF", "value": "def"}, {"name": "OVERRIDDEN", "value": "def"}],
        "environmentFiles": [{"value": "arn:aws:s3:::conf/app.env", "type": "s3"}],
        "workingDirectory": "/home/app",
        "user": "app",
        "ulimits": [{"name": "nofile", "softLimit": 1000, "hardLimit": 1048576}],
        "readonlyRootFilesystem": True,
        "linuxParameters": {"initProcessEnabled": True},
    }], busybox)
    arn = run(ecs, fam, overrides={"containerOverrides": [{"name": "app", "environment": [{"name": "OVERRIDDEN", "value": "override"}]}]})
    wait_status(ecs, arn, "STOPPED")
    out = logs(node, arn)
    assert "env=file,def,def,override" in out
    assert "cwd=/home/app" in out
    assert "uid=1000" in out
    assert "nofile=1000" in out, "the hard limit is clamped to the host's, the soft one kept"
    assert "rootfs=ro" in out
    assert "pid1=estiba" in out, "initProcessEnabled runs an init as PID 1"
    assert "args=zero,one" in out
    # A command override replaces the command, not the entry point.
    arn = run(ecs, fam, overrides={"containerOverrides": [{"name": "app", "command": ["x", "y"]}]})
    wait_status(ecs, arn, "STOPPED")
    assert "args=x,y" in logs(node, arn)


def test_environment_files_stay_in_their_directory(node, ecs, busybox, env_dir):
    """Issue 14.6: an environment file could name any file of the host."""
    with pytest.raises(ClientError) as e:
        register(ecs, [{"name": "app", "command": ["env"], "environmentFiles": [{"value": "/etc/shadow", "type": "s3"}]}], busybox)
    assert error_code(e) == "ClientException"
    # A link out of the directory is not followed: the task does not start.
    os.symlink("/etc/shadow", env_dir / "shadow.env")
    fam = register(ecs, [{"name": "app", "command": ["env"], "environmentFiles": [{"value": "arn:aws:s3:::shadow.env", "type": "s3"}]}], busybox)
    t = wait_status(ecs, run(ecs, fam), "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart", t
    assert "shadow.env" in t["stoppedReason"], t["stoppedReason"]
    assert "root:" not in logs(node, t["taskArn"])


def test_stop_timeout_escalates_to_sigkill(node, ecs, busybox):
    fam = register(ecs, [{"name": "stubborn", "command": ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"], "stopTimeout": 2}], busybox)
    arn = run(ecs, fam)
    wait_status(ecs, arn, "RUNNING")
    wait_until(lambda: "ready" in logs(node, arn), what="ready")
    t0 = time.time()
    ecs.stop_task(task=arn)
    t = wait_status(ecs, arn, "STOPPED", timeout=20)
    took = time.time() - t0
    assert container(t, "stubborn")["exitCode"] == 137
    assert 1.5 <= took < 10, took


def test_failed_pull(node, ecs, registry):
    fam = register(ecs, [{"name": "app", "command": ["true"]}], f"{registry.client.host}/does-not-exist:nope")
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart"
    assert t["stoppedReason"].startswith("CannotPullContainerError:")
    assert "not found" in t["stoppedReason"] or "404" in t["stoppedReason"]
    assert container(t, "app")["reason"].startswith("CannotPullContainerError:")


def test_image_formats(node, ecs, registry):
    c = registry.client
    uris = {
        "zstd": img.busybox_image(c, "formats", "zstd", compress="zstd", cmd=["echo", "zstd works"]),
        "plain": img.busybox_image(c, "formats", "plain", compress=None, cmd=["echo", "plain works"]),
    }
    # A multi-platform index: only the linux/amd64 entry can run here.
    layer = img.tar_layer(img.busybox_entries())
    amd = c.push_image("multi", "amd64", [layer], cmd=["echo", "amd64 picked"])
    arm = c.push_image("multi", "arm64", [layer], cmd=["echo", "wrong platform"])
    size = lambda d: len(c.request("GET", f"/v2/multi/manifests/{d}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})[2])
    c.push_index("multi", "latest", [(("linux", "arm64"), arm, size(arm)), (("linux", "amd64"), amd, size(amd))])
    uris["index"] = f"{c.host}/multi:latest"
    expected = {"zstd": "zstd works", "plain": "plain works", "index": "amd64 picked"}
    for name, uri in uris.items():
        fam = register(ecs, [{"name": "app"}], uri)
        arn = run(ecs, fam)
        t = wait_status(ecs, arn, "STOPPED")
        assert container(t, "app")["exitCode"] == 0, (name, t.get("stoppedReason"))
        out = logs(node, arn)
        assert expected[name] in out and "wrong platform" not in out, (name, out)


def test_cached_image_starts_without_the_registry(tmp_path, busybox):
    reg_dir = tmp_path / "own-registry"
    r = img.DockerRegistry(str(reg_dir), free_port())
    uri = img.busybox_image(r.client, "cached", "v1", cmd=["echo", "from cache"])
    e = Estiba(str(tmp_path / "srv"), node=True).start()
    try:
        ecs = e.client()
        fam = register(ecs, [{"name": "app"}], uri)
        wait_status(ecs, run(ecs, fam), "STOPPED")
        r.stop()
        arn = run(ecs, fam)
        t = wait_status(ecs, arn, "STOPPED")
        assert container(t, "app")["exitCode"] == 0, t.get("stoppedReason")
        assert "from cache" in logs(e, arn)
    finally:
        e.stop()


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_registry_authentication(tmp_path, registry, mode):
    img.busybox_image(registry.client, "private", mode, cmd=["echo", f"{mode} auth works"])
    proxy = AuthProxy(registry.client.endpoint, free_port(), mode)
    e = Estiba(str(tmp_path / "srv"), node=True).start()
    try:
        ecs = e.client()
        uri = f"{proxy.host}/private:{mode}"
        # Without credentials the pull is refused.
        fam = register(ecs, [{"name": "app"}], uri)
        t = wait_status(ecs, run(ecs, fam), "STOPPED")
        assert t["stoppedReason"].startswith("CannotPullContainerError:"), t["stoppedReason"]
        # With repositoryCredentials (a secret stored for estiba) it works.
        os.makedirs(os.path.join(e.data_dir, "secrets"), exist_ok=True)
        with open(os.path.join(e.data_dir, "secrets", "regcreds.json"), "w") as f:
            json.dump({"username": "user", "password": "secret"}, f)
        fam = register(ecs, [{"name": "app", "repositoryCredentials": {
            "credentialsParameter": "arn:aws:secretsmanager:us-east-1:000000000000:secret:regcreds-AbCdEf"}}], uri)
        arn = run(ecs, fam)
        t = wait_status(ecs, arn, "STOPPED")
        assert container(t, "app")["exitCode"] == 0, t.get("stoppedReason")
        assert f"{mode} auth works" in logs(e, arn)
        if mode == "bearer":
            assert proxy.token_requests >= 1
        # Issue 14.7: a parameter cannot name a file outside the secrets directory.
        with open(os.path.join(e.data_dir, "stolen.json"), "w") as f:
            json.dump({"username": "user", "password": "secret"}, f)
        fam = register(ecs, [{"name": "app", "repositoryCredentials": {"credentialsParameter": "../stolen"}}], uri)
        t = wait_status(ecs, run(ecs, fam), "STOPPED")
        assert t["stoppedReason"].startswith("CannotPullContainerError:") and "stolen" in t["stoppedReason"], t["stoppedReason"]
    finally:
        e.stop()
        proxy.stop()


def test_device_nodes_made_in_the_root_filesystem_open_nothing(node, ecs, busybox):
    """Issue 14.8: the writable root is mounted nodev, so a root container (which keeps
    CAP_MKNOD, as with Docker) cannot make a device node of a host disk and read it. Even a
    device its cgroup allows (null) does not open from there."""
    script = "mknod /null2 c 1 3 && echo made; (echo x > /null2) 2>/dev/null && echo opened || echo refused; echo x > /dev/null && echo dev-ok"
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", script]}], busybox)
    arn = run(ecs, fam)
    wait_status(ecs, arn, "STOPPED")
    out = logs(node, arn)
    assert "made" in out and "refused" in out and "opened" not in out, out
    assert "dev-ok" in out, "the container's own /dev works"


def test_hostile_layer_cannot_escape(node, ecs, registry):
    marker = f"/tmp/estiba-escape-{unique('x')}"
    hostile = [
        (f"../../../../../../../..{marker}-dotdot", b"escaped"),
        ("evil", b"", 0o777, tarfile.SYMTYPE, "/tmp"),
        (f"evil/{os.path.basename(marker)}-symlink", b"escaped"),
        ("up", b"", 0o777, tarfile.SYMTYPE, "../../../../../../../../tmp"),
        (f"up/{os.path.basename(marker)}-up", b"escaped"),
        ("hl", b"", 0o644, tarfile.LNKTYPE, "../../../../../../../../etc/hostname"),
        ("dev/evil", b"", 0o666, tarfile.CHRTYPE, ""),
        ("ok.txt", b"the layer still works"),
    ]
    layers = [img.tar_layer(img.busybox_entries()), img.tar_layer(hostile)]
    registry.client.push_image("hostile", "latest", layers, cmd=["sh", "-c", "cat /ok.txt; ls -la /evil /up /hl 2>&1 | head -5"])
    fam = register(ecs, [{"name": "app"}], f"{registry.client.host}/hostile:latest")
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert container(t, "app")["exitCode"] == 0, t.get("stoppedReason")
    assert "the layer still works" in logs(node, arn)
    for suffix in ["-dotdot", "-symlink", "-up"]:
        assert not os.path.exists(marker + suffix), marker + suffix


def test_logs_command(node, ecs, busybox):
    fam = register(ecs, [
        {"name": "a", "command": ["sh", "-c", "echo out-a; echo err-a >&2; sleep 1"]},
        {"name": "b", "command": ["sh", "-c", "echo out-b; sleep 1"], "essential": False},
    ], busybox)
    arn = run(ecs, fam)
    # --follow returns once the task's containers have stopped.
    p = subprocess.run([BIN, "logs", arn, "--follow", "--data-dir", node.data_dir], capture_output=True, text=True, timeout=60)
    assert "a | out-a" in p.stdout and "b | out-b" in p.stdout
    assert "a | err-a" in p.stderr
    only_b = subprocess.run([BIN, "logs", arn.rsplit("/", 1)[1], "--container", "b", "--timestamps", "--data-dir", node.data_dir],
                            capture_output=True, text=True, timeout=30).stdout
    assert "out-b" in only_b and "out-a" not in only_b
    assert only_b.split()[0].endswith("Z"), only_b
    bad = subprocess.run([BIN, "logs", arn, "--container", "nope", "--data-dir", node.data_dir], capture_output=True, text=True)
    assert bad.returncode != 0 and "has no container nope" in bad.stderr


def leftovers(e, task_ids):
    """Mounts, cgroups, supervisors and namespace pins a set of tasks still hold."""
    found = []
    mounts = open("/proc/mounts").read()
    for tid in task_ids:
        if tid in mounts:
            found.append(f"mount of {tid}")
        for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup"]:
            if os.path.exists(os.path.join(root, "estiba", tid)):
                found.append(f"cgroup {root}/estiba/{tid}")
        d = os.path.join(e.data_dir, "agent", "tasks", tid)
        for sub in ["netns"] + [os.path.join(c, x) for c in (os.listdir(d) if os.path.isdir(d) else []) for x in ("rootfs", "upper", "work")]:
            if os.path.exists(os.path.join(d, sub)):
                found.append(f"{tid}/{sub}")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for tid in task_ids:
        if tid in ps:
            found.append(f"process of {tid}")
    return found


def test_kill_9_and_restart_adopts_tasks(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), node=True).start()
    try:
        ecs = e.client()
        fam_long = register(ecs, [{"name": "app", "command": ["sh", "-c", "echo alive; trap 'exit 0' TERM; while :; do sleep 0.1; done"]}], busybox)
        fam_short = register(ecs, [{"name": "app", "command": ["sh", "-c", "sleep 2; exit 5"]}], busybox)
        long_arn, short_arn = run(ecs, fam_long), run(ecs, fam_short)
        t_long = wait_status(ecs, long_arn, "RUNNING")
        wait_status(ecs, short_arn, "RUNNING")
        runtime_id = container(t_long, "app")["runtimeId"]
        started = os.path.join(e.data_dir, "agent", "tasks", long_arn.rsplit("/", 1)[1], "app", "started.json")
        pid = json.load(open(started))["pid"]
        e.kill9()
        time.sleep(3)  # the short task exits while no server runs
        e.start()
        ecs = e.client()
        t = wait_status(ecs, short_arn, "STOPPED", timeout=30)
        assert container(t, "app")["exitCode"] == 5
        assert t["stopCode"] == "EssentialContainerExited"
        t = describe(ecs, long_arn)
        assert t["lastStatus"] == "RUNNING"
        assert container(t, "app")["runtimeId"] == runtime_id
        # The same process, adopted, not a container started again (whose id would be the same).
        assert json.load(open(started))["pid"] == pid and os.path.exists(f"/proc/{pid}"), "the same container, adopted"
        ecs.stop_task(task=long_arn)
        t = wait_status(ecs, long_arn, "STOPPED", timeout=30)
        assert container(t, "app")["exitCode"] == 0
        ids = [a.rsplit("/", 1)[1] for a in (long_arn, short_arn)]
        assert wait_until(lambda: not leftovers(e, ids), timeout=15, what="clean-up") is True
    finally:
        e.stop()


def test_nothing_left_after_tasks_stop(node, ecs, busybox):
    fam = register(ecs, [{"name": "a", "command": ["sleep", "300"], "stopTimeout": 1}, {"name": "b", "command": ["sleep", "300"], "stopTimeout": 1}], busybox)
    arns = [run(ecs, fam) for _ in range(3)]
    for a in arns:
        wait_status(ecs, a, "RUNNING")
    ids = [a.rsplit("/", 1)[1] for a in arns]
    assert leftovers(node, ids), "running tasks hold resources"
    for a in arns:
        ecs.stop_task(task=a)
    for a in arns:
        wait_status(ecs, a, "STOPPED")
    assert wait_until(lambda: not leftovers(node, ids), timeout=15, what="clean-up") is True


def test_memory_floor_refuses_tasks(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), extra_args=["--memory-floor", "100000GiB"], node=True).start()
    try:
        ecs = e.client()
        fam = register(ecs, [{"name": "app", "command": ["true"]}], busybox)
        def refused():
            r = ecs.run_task(taskDefinition=fam, networkConfiguration=NET)
            return r["failures"] and r
        r = wait_until(refused, timeout=15, what="RESOURCE:MEMORY")
        assert r["failures"][0]["reason"] == "RESOURCE:MEMORY"
        assert r["tasks"] == []
    finally:
        e.stop()


@pytest.mark.skipif(not os.path.exists("/usr/sbin/runc"), reason="runc is not installed")
def test_runc_executor(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), extra_args=["--container-runtime", "runc"], node=True).start()
    try:
        ecs = e.client()
        fam = register(ecs, [
            {"name": "web", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"], "essential": False, "stopTimeout": 1},
            {"name": "app", "user": "nobody", "command": ["sh", "-c", "id -u; for i in $(seq 50); do wget -q -O- http://localhost:8080/ && exit 7; sleep 0.1; done"],
             "dependsOn": [{"containerName": "web", "condition": "START"}]},
        ], busybox)
        arn = run(ecs, fam)
        t = wait_status(ecs, arn, "STOPPED")
        assert container(t, "app")["exitCode"] == 7, t.get("stoppedReason")
        out = logs(e, arn, "app")
        assert "65534" in out and "hello from a busybox image" in out
        assert wait_until(lambda: not leftovers(e, [arn.rsplit("/", 1)[1]]), timeout=15, what="clean-up") is True
        # The root filesystem runc is given is nodev too.
        fam = register(ecs, [{"name": "app", "command": ["sh", "-c", "mknod /null2 c 1 3; (echo x > /null2) 2>/dev/null && echo opened || echo refused"]}], busybox)
        arn = run(ecs, fam)
        wait_status(ecs, arn, "STOPPED")
        assert "refused" in logs(e, arn), logs(e, arn)
    finally:
        e.stop()


def test_tasks_pull_from_estibas_own_registry(tmp_path):
    """A task definition naming a repositoryUri pulls from the server's own registry with no
    network hop: the registry demands tokens, and the agent needs none. A tag pushed again
    is used by the next task."""
    e = Estiba(str(tmp_path), extra_args=["--registry-auth", "token"], node=True).start()
    try:
        ecs, ecr = e.client(), e.client("ecr")
        uri = ecr.create_repository(repositoryName="apps/hello")["repository"]["repositoryUri"]
        data = ecr.get_authorization_token()["authorizationData"][0]
        password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]
        reg = img.Registry(e.endpoint, "AWS", password)
        img.busybox_image(reg, "apps/hello", "v1", cmd=["echo", "one"])
        fam = register(ecs, [{"name": "app"}], f"{uri}:v1")
        t = wait_status(ecs, run(ecs, fam), "STOPPED")
        assert container(t, "app")["exitCode"] == 0, t.get("stoppedReason")
        first = container(t, "app")["imageDigest"]
        assert "one" in logs(e, t["taskArn"])
        # The same tag, pushed again with another command: the next task runs the new image.
        img.busybox_image(reg, "apps/hello", "v1", cmd=["echo", "two"])
        t = wait_status(ecs, run(ecs, fam), "STOPPED")
        assert container(t, "app")["imageDigest"] != first
        assert "two" in logs(e, t["taskArn"])
        # A tag that is not there fails the task the way ECS does.
        fam2 = register(ecs, [{"name": "app"}], f"{uri}:missing")
        t = wait_status(ecs, run(ecs, fam2), "STOPPED")
        assert t["stopCode"] == "TaskFailedToStart"
        assert t["stoppedReason"].startswith("CannotPullContainerError:"), t["stoppedReason"]
    finally:
        e.stop()


MEMCG = "/sys/fs/cgroup/memory"


def own_slots(server_pid):
    """The warm slots (`estiba/.slot-<supervisor pid>`) whose parked supervisor is a child of
    `server_pid`."""
    found = []
    for name in os.listdir(os.path.join(MEMCG, "estiba")) if os.path.isdir(os.path.join(MEMCG, "estiba")) else []:
        if not name.startswith(".slot-"):
            continue
        try:
            ppid = int(open(f"/proc/{name[len('.slot-'):]}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == server_pid:
            found.append(name)
    return found


def memcg_of(pid):
    line = next(l for l in open(f"/proc/{pid}/cgroup").read().splitlines() if l.split(":")[1] == "memory")
    return line.split(":", 2)[2]


@pytest.mark.skipif(not os.path.isdir(MEMCG) or os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
                    reason="warm slots need a cgroup v1 memory hierarchy")
def test_warm_supervisors_start_containers_in_their_own_cgroup(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), node=True).start()
    try:
        server_pid = e.proc.pid
        slots = wait_until(lambda: len(own_slots(server_pid)) == 4 and own_slots(server_pid), timeout=30, what="4 parked supervisors")
        ecs = e.client()
        fam = register(ecs, [{"name": "app", "memory": 64, "command": ["sleep", "600"], "stopTimeout": 2},
                             {"name": "side", "memory": 32, "command": ["sleep", "600"], "stopTimeout": 2}], busybox)
        arn = run(ecs, fam)
        wait_status(ecs, arn, "RUNNING")
        tid = arn.rsplit("/", 1)[1]
        for name, mib in [("app", 64), ("side", 32)]:
            started = json.load(open(os.path.join(e.data_dir, "agent", "tasks", tid, name, "started.json")))
            # The supervisor was a parked one (its slot is named after it), and its container
            # was born in the slot, now the container's cgroup with the container's limit.
            assert f".slot-{started['shim_pid']}" in slots, (started, slots)
            assert memcg_of(started["pid"]) == f"/estiba/{tid}/{name}"
            assert not memcg_of(started["shim_pid"]).startswith(f"/estiba/{tid}"), "the supervisor stays outside"
            limit = int(open(f"{MEMCG}/estiba/{tid}/{name}/memory.limit_in_bytes").read())
            assert limit == mib << 20
        # The pool is refilled.
        refilled = wait_until(lambda: len(own_slots(server_pid)) == 4 and own_slots(server_pid), timeout=30, what="refilled pool")
        ecs.stop_task(task=arn)
        wait_status(ecs, arn, "STOPPED")
        assert wait_until(lambda: not leftovers(e, [tid]), timeout=15, what="clean-up") is True
    finally:
        e.stop()
    # Parked supervisors leave with the server, and take their slots with them.
    gone = lambda: not any(os.path.exists(os.path.join(MEMCG, "estiba", s)) for s in refilled)
    assert wait_until(gone, timeout=10, what="slots removed") is True


def test_containers_start_with_default_signals(node, ecs, busybox):
    """The supervisor blocks SIGCHLD and ignores SIGPIPE; the container must inherit neither."""
    fam = register(ecs, [{"name": "app", "command": ["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"]}], busybox)
    arn = run(ecs, fam)
    t = wait_status(ecs, arn, "STOPPED")
    assert container(t, "app")["exitCode"] == 0, t.get("stoppedReason")
    masks = dict(l.split(":") for l in logs(node, arn).split("\n") if l.startswith("Sig"))
    assert int(masks["SigBlk"], 16) == 0, masks
    assert int(masks["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)) == 0, masks
