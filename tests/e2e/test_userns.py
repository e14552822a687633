"""`--userns remap` (issue 21, item 5): containers run in a user namespace where their root is
an unprivileged host uid, as with Docker's userns-remap. The image's layers are shown through
idmapped mounts (one copy on disk serves every container), the writable layer belongs to the
remapped root, and the root still works as root inside: it writes its files, binds port 80 and
runs health checks; privileged containers keep the host's ids.

Needs root, and runs only inside a network namespace with no route out."""

import json
import os
import subprocess

import pytest

import images as img
from conftest import BIN, Estiba, health_check_status, isolated, join_ec2, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
BASE = 1000000000


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    e = Estiba(str(tmp_path_factory.mktemp("node")), node=True,
               extra_args=["--userns", "remap", "--join-cluster", "ec2"]).start()
    e.client("ecr").create_repository(repositoryName="busybox")
    e.image = img.busybox_image(img.Registry(e.endpoint), "busybox", "latest")
    join_ec2(e.client())
    yield e
    e.drain()
    e.stop()


SCRIPT = "; ".join([
    "echo map=$(awk '{print $1\",\"$2\",\"$3}' /proc/self/uid_map)",
    "echo uid=$(id -u)",
    "echo owner=$(stat -c %u /bin/busybox)",
    "(echo hi > /etc/motd && echo etc_write=ok) || echo etc_write=denied",
    "(echo '10.9.9.9 extra' >> /etc/hosts && echo hosts_write=ok) || echo hosts_write=denied",
    "(httpd -p 80 -h /etc && echo low_port=ok) || echo low_port=denied",
    "(mknod /tmp/blk b 7 7 && echo mknod=ok) || echo mknod=denied",
    "echo done",
    "exec sleep 600",
])


def run(node, privileged=False):
    ecs = node.client()
    fam = unique("u")
    c = {"name": "app", "image": node.image, "memory": 64, "command": ["sh", "-c", SCRIPT], "stopTimeout": 2}
    if privileged:
        c["privileged"] = True
    ecs.register_task_definition(family=fam, networkMode="awsvpc", cpu="256", memory="512", containerDefinitions=[c])
    arn = ecs.run_task(taskDefinition=fam, cluster="ec2", launchType="EC2", networkConfiguration=NET)["tasks"][0]["taskArn"]
    wait_until(lambda: ecs.describe_tasks(cluster="ec2", tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING",
               timeout=60, what="RUNNING")

    def said():
        out = subprocess.run([BIN, "logs", arn, "--data-dir", node.data_dir], capture_output=True, text=True,
                             timeout=30).stdout
        return "done" in out and out

    out = wait_until(said, timeout=30, what="the script's output")
    result = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    task_dir = os.path.join(node.data_dir, "agent", "tasks", arn.rsplit("/", 1)[1])
    with open(os.path.join(task_dir, "app", "started.json")) as f:
        pid = json.load(f)["pid"]
    with open(f"/proc/{pid}/status") as f:
        host_uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
    return arn, result, host_uid, task_dir


def test_container_root_is_an_unprivileged_host_uid(node):
    arn, r, host_uid, task_dir = run(node)
    try:
        assert r["map"] == f"0,{BASE},65536", r
        assert host_uid == BASE, "the container's root is the range's first uid on the host"
        # Inside, root is root: the image's files are its own, it writes them, binds port 80.
        assert r["uid"] == "0" and r["owner"] == "0", r
        assert r["etc_write"] == "ok" and r["hosts_write"] == "ok" and r["low_port"] == "ok", r
        assert r["mknod"] == "denied", "no device nodes from a user namespace"
        # On the host, what it wrote belongs to the remapped root, and the layers are untouched.
        assert os.stat(os.path.join(task_dir, "app", "upper", "etc", "motd")).st_uid == BASE
    finally:
        node.client().stop_task(cluster="ec2", task=arn)


def test_privileged_containers_keep_the_hosts_ids(node):
    arn, r, host_uid, _ = run(node, privileged=True)
    try:
        assert r["map"] == "0,0,4294967295" and host_uid == 0, r
    finally:
        node.client().stop_task(cluster="ec2", task=arn)


def test_health_checks_join_the_user_namespace(node):
    """A health check runs as exec-in does: inside the node's user namespace, as its root."""
    ecs = node.client()
    check = f"test \"$(awk '{{print $2}}' /proc/self/uid_map)\" = {BASE} && test \"$(id -u)\" = 0"
    assert health_check_status(ecs, node.image, check, NET) == "HEALTHY"
