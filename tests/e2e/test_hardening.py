"""Hardened containers (issue 21, item 5): what a container of the built-in executor may not do.

Default containers get Docker's capabilities, `no_new_privs`, Docker's default seccomp profile
and only the default devices; a privileged EC2 task gets all of it back; Fargate never runs
privileged. A small static probe (probe/syscalls.c, built here with the host's C compiler)
tries the forbidden system calls from inside a busybox container and prints each errno.

Needs root, and runs only inside a network namespace with no route out."""

import os
import subprocess

import pytest
from botocore.exceptions import ClientError

import images as img
from conftest import BIN, Estiba, error_code, error_message, health_check_status, isolated, join_ec2, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out"),
]

HERE = os.path.dirname(os.path.abspath(__file__))
NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
EPERM, ENOENT, ESRCH, EACCES, ENOSYS = 1, 2, 3, 13, 38
# Docker's 14 default capabilities as the kernel's bit mask.
DEFAULT_CAPS_MASK = "00000000a80425fb"


def host_block_device():
    """`major:minor` of a block device of the host that the host's root can read (a disk when
    there is one; some sandboxes refuse even root their disks), not the loop7 given below."""
    devs = sorted(os.listdir("/sys/block"), key=lambda d: (d.startswith(("loop", "zram", "ram")), d))
    for d in devs:
        if d == "loop7" or not os.path.exists(f"/sys/block/{d}/dev"):
            continue
        try:
            with open(f"/dev/{d}", "rb") as f:
                f.read(1)
        except OSError:
            continue
        return open(f"/sys/block/{d}/dev").read().strip()
    pytest.fail("the host has no block device its root can read")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run(["cc", "-static", "-O", "-o", str(out), os.path.join(HERE, "probe", "syscalls.c")], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def node(tmp_path_factory, probe):
    e = Estiba(str(tmp_path_factory.mktemp("node")), node=True, extra_args=["--join-cluster", "ec2"]).start()
    e.image = img.busybox_image(img_registry(e), "busybox", "latest", extra=[("bin/probe", probe, 0o755)])
    join_ec2(e.client())
    yield e
    e.drain()
    e.stop()


def img_registry(e):
    e.client("ecr").create_repository(repositoryName="busybox")
    return img.Registry(e.endpoint)


SCRIPT = "; ".join([
    "grep -E '^(NoNewPrivs|Seccomp|CapBnd|CapEff):' /proc/self/status",
    "/bin/probe {host_pid}",
    # A block device node: made in the writable root (nodev) and in /dev (device cgroup).
    "mknod /tmp/blk b {blk} && (head -c 1 /tmp/blk >/dev/null 2>&1 && echo root_blk=read || echo root_blk=denied)",
    "mknod /dev/blk b {blk} && (head -c 1 /dev/blk >/dev/null 2>&1 && echo dev_blk=read || echo dev_blk=denied)",
    "unshare -m true 2>/dev/null && echo sh_unshare=ok || echo sh_unshare=denied",
    "mkdir -p /mnt/t && (mount -t tmpfs none /mnt/t 2>/dev/null && echo sh_mount=ok || echo sh_mount=denied)",
    "head -c 1 /dev/given >/dev/null 2>&1 && echo given=read || echo given=denied",
    "echo done",
])


def run_probe(node, *, privileged=False, launch="EC2", security=None, caps=None, devices=None, readonly=False):
    ecs = node.client()
    c = {"name": "app", "image": node.image, "memory": 64,
         "command": ["sh", "-c", SCRIPT.format(host_pid=node.proc.pid, blk=host_block_device().replace(":", " "))]}
    if privileged:
        c["privileged"] = True
    if security:
        c["dockerSecurityOptions"] = security
    lp = {}
    if caps:
        lp["capabilities"] = caps
    if devices:
        lp["devices"] = devices
    if lp:
        c["linuxParameters"] = lp
    if readonly:
        c["readonlyRootFilesystem"] = True
    fam = unique("f")
    args = dict(family=fam, networkMode="awsvpc", containerDefinitions=[c], cpu="256", memory="512")
    if launch == "FARGATE":
        args["requiresCompatibilities"] = ["FARGATE"]
    ecs.register_task_definition(**args)
    kw = dict(cluster="ec2", launchType="EC2") if launch == "EC2" else {}
    r = ecs.run_task(taskDefinition=fam, networkConfiguration=NET, **kw)
    assert r["failures"] == [], r["failures"]
    arn = r["tasks"][0]["taskArn"]
    cluster = arn.split("/")[1]
    t = wait_until(lambda: (t := ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0])["lastStatus"] == "STOPPED" and t,
                   timeout=60, what="the probe task to stop")
    out = subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True, timeout=30).stdout
    assert "done" in out, (t.get("stoppedReason"), out)
    result = {}
    for line in out.splitlines():
        for sep in ("=", ":"):
            if sep in line:
                k, v = line.split(sep, 1)
                result[k.strip()] = v.strip()
                break
    return result


def test_default_container_is_confined(node):
    r = run_probe(node)
    assert r["NoNewPrivs"] == "1"
    assert r["Seccomp"] == "2", "a seccomp filter is installed"
    assert r["CapBnd"] == DEFAULT_CAPS_MASK and r["CapEff"] == DEFAULT_CAPS_MASK, "Docker's 14 capabilities"
    for call in ("keyctl", "add_key", "init_module", "finit_module", "unshare_user", "unshare_mnt", "mount", "kcmp",
                 "socket_vsock"):
        assert int(r[call]) == EPERM, (call, r)
    assert int(r["clone3"]) == ENOSYS, "clone3 says ENOSYS so libc falls back to clone, as with Docker"
    # The host's processes are not in the container's PID namespace.
    assert int(r["ptrace_host"]) == ESRCH and int(r["vm_read_host"]) == ESRCH, r
    assert int(r["getpid"]) == 0
    assert r["root_blk"] == "denied" and r["dev_blk"] == "denied", r
    assert r["sh_unshare"] == "denied" and r["sh_mount"] == "denied" and r["given"] == "denied", r


def test_privileged_ec2_task_may_do_what_others_may_not(node):
    r = run_probe(node, privileged=True)
    assert r["NoNewPrivs"] == "0" and r["Seccomp"] == "0", r
    assert r["CapBnd"] != DEFAULT_CAPS_MASK, r
    assert int(r["keyctl"]) != EPERM and int(r["unshare_mnt"]) == 0, r
    assert int(r["init_module"]) not in (0, EPERM), "reaches the kernel (which refuses the empty module)"
    assert r["dev_blk"] == "read" and r["sh_unshare"] == "ok" and r["sh_mount"] == "ok", r
    assert r["root_blk"] == "denied", "the writable root stays nodev"


def test_capabilities_and_unconfined(node):
    # SYS_ADMIN opens the calls the profile conditions on it; dropping ALL leaves nothing.
    r = run_probe(node, caps={"add": ["SYS_ADMIN"]})
    assert r["Seccomp"] == "2" and int(r["unshare_mnt"]) == 0 and int(r["clone3"]) != ENOSYS, r
    assert int(r["keyctl"]) == EPERM, "never allowed by the default profile"
    r = run_probe(node, caps={"drop": ["ALL"]})
    assert r["CapBnd"] == "0000000000000000" and r["CapEff"] == "0000000000000000", r
    # seccomp=unconfined on EC2: no filter, but still no_new_privs and the default capabilities.
    r = run_probe(node, security=["seccomp=unconfined"])
    assert r["Seccomp"] == "0" and r["NoNewPrivs"] == "1" and r["CapBnd"] == DEFAULT_CAPS_MASK, r
    assert int(r["keyctl"]) != EPERM, "keyctl reaches the kernel without the filter"
    # Without the filter, a user namespace gives the probe the capabilities to mount in it...
    assert int(r["unshare_user"]) == 0 and int(r["mount"]) == 0, r
    # ...while the container's own capabilities still refuse mount.
    assert r["sh_mount"] == "denied", r


def test_devices_and_readonly_root(node):
    # A host device given by linuxParameters.devices: made in /dev and allowed by the cgroup.
    # (An unbound loop device: it opens and reads as empty.)
    r = run_probe(node, devices=[{"hostPath": "/dev/loop7", "containerPath": "/dev/given", "permissions": ["read"]}],
                  readonly=True)
    assert r["given"] == "read", r
    assert r["dev_blk"] == "denied", r
    assert "root_blk" not in r, "mknod in a read-only root fails before anything is read"


def test_fargate_never_runs_privileged(node):
    ecs = node.client()
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(
            family=unique("f"), networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "app", "image": node.image, "privileged": True}])
    assert error_code(e) == "ClientException"
    assert "privileged" in error_message(e)
    # Registered without requiring Fargate, a privileged definition is EC2-only.
    fam = unique("f")
    td = ecs.register_task_definition(family=fam, networkMode="awsvpc", cpu="256", memory="512",
                                      containerDefinitions=[{"name": "app", "image": node.image, "privileged": True}])
    assert td["taskDefinition"]["compatibilities"] == ["EC2"]
    with pytest.raises(ClientError) as e:
        ecs.run_task(taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET)
    assert error_code(e) in ("InvalidParameterException", "ClientException"), error_message(e)
    # seccomp=unconfined is ignored on Fargate.
    r = run_probe(node, security=["seccomp=unconfined"], launch="FARGATE")
    assert r["Seccomp"] == "2" and int(r["keyctl"]) == EPERM, r


def test_health_checks_run_confined(node):
    """A health check's command runs with the container's confinement, as `docker exec` does."""
    ecs = node.client()
    check = ("grep -q '^Seccomp:.*2' /proc/self/status && grep -q '^NoNewPrivs:.*1' /proc/self/status"
             f" && grep -q '^CapBnd:.*{DEFAULT_CAPS_MASK}' /proc/self/status")
    assert health_check_status(ecs, node.image, check, NET) == "HEALTHY"
