"""The etcd store: `estiba server --store etcd` keeps its state in a real etcd (Debian's
`etcd-server`, started here on free loopback ports), survives a restart, and `estiba migrate`
moves a SQLite state into etcd. Control plane only: the servers run no node, so service tasks
stay PROVISIONING."""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import BIN, Estiba, free_port, register_fargate, unique, wait_until, AWSVPC

ETCD = os.environ.get("ESTIBA_ETCD_BIN") or shutil.which("etcd")

pytestmark = pytest.mark.skipif(not ETCD, reason="no etcd binary (install Debian's etcd-server)")


class Etcd:
    """One etcd member on loopback with its data in a temporary directory."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="estiba-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.port, peer = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.proc = subprocess.Popen(
            [ETCD, "--name", "default", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             f"--initial-cluster=default={peer_url}"],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "etcd.log"), "wb"),
        )

        def healthy():
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(healthy, timeout=20, what="etcd healthy")

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
    srv = Estiba(sqlite_dir).start()
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
