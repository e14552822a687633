"""Shared harness for estiba's end-to-end tests.

Every test talks to a real `estiba server` process (the binary from ESTIBA_BIN, built by
`cargo xtask test`) over loopback, with the real clients: boto3 and the AWS CLI (Debian's
`awscli` when installed, else whatever `aws` is on PATH).

With `ESTIBA_TEST_STORE=etcd` (`cargo xtask test --store etcd`) every server keeps its state
in etcd instead of SQLite: one etcd member on loopback for the whole session (Debian's
`etcd-server`, data in a temporary directory, stopped at the end; one more per network
namespace a test makes and starts servers in, stopped when it leaves), each `Estiba` object under
a prefix of its own (`/t-<uuid>/`) that it keeps across restarts and kill -9, so the crash
tests mean the same thing. Tests that pass their own `--store` keep it.
`ESTIBA_TEST_CONTAINERS=off` skips the tests that run containers (see `isolated`).
"""

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import boto3
import botocore.config
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ESTIBA_BIN", os.path.join(ROOT, "target", "debug", "estiba"))
AWS_CLI = os.environ.get("AWS_CLI") or ("/usr/bin/aws" if os.path.exists("/usr/bin/aws") else shutil.which("aws"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated():
    """True inside a network namespace with no route out: no default route (IPv4, or IPv6
    other than the kernel's unreachable one on lo) and no physical interface; bridges and
    veths (which estiba and the tests make) are fine. Always false with
    `ESTIBA_TEST_CONTAINERS=off`: every test that runs containers or sends traffic to tasks
    is guarded by this, so such a run is the control plane's tests alone."""
    if os.environ.get("ESTIBA_TEST_CONTAINERS") == "off":
        return False
    try:
        with open("/proc/net/route") as f:
            if any(l.split()[1] == "00000000" and l.split()[7] == "00000000" for l in f.readlines()[1:]):
                return False
        with open("/proc/net/ipv6_route") as f:
            for l in f:
                dest, plen, flags, dev = l.split()[0], l.split()[1], int(l.split()[8], 16), l.split()[9]
                if plen == "00" and int(dest, 16) == 0 and not (dev == "lo" and flags & 0x200):
                    return False
        links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, check=True).stdout)
        return all(l["ifname"] == "lo" or "linkinfo" in l for l in links)
    except (OSError, ValueError, IndexError, subprocess.CalledProcessError):
        return False


_networks = iter(range(1 << 30))

STORE = os.environ.get("ESTIBA_TEST_STORE", "sqlite")
if STORE not in ("sqlite", "etcd"):
    raise RuntimeError(f"ESTIBA_TEST_STORE={STORE!r}: expected sqlite or etcd")


def _netns():
    """The calling thread's network namespace (its inode): tests that move a thread into a
    namespace of their own start servers there, which reach only that namespace's loopback."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def launch_etcd(d, name, args=()):
    """Start one etcd member on free loopback ports with its data and log (`etcd.log`) in
    `d`, and wait until it is healthy: `(process, endpoint, (client port, peer port))`.
    A port free_port() saw free can be taken before etcd binds it (by an outbound connection
    of another process in the namespace): etcd then exits at once, and another pair of ports
    is tried. A member that does not start in three tries fails with its log's end."""
    etcd = os.environ.get("ESTIBA_ETCD_BIN") or shutil.which("etcd")
    if not etcd:
        raise RuntimeError("no `etcd` binary (install Debian's etcd-server)")
    log = os.path.join(d, "etcd.log")
    for _ in range(3):
        port = free_port()
        peer = free_port()
        while peer == port:
            peer = free_port()
        endpoint, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        data = os.path.join(d, "data")
        shutil.rmtree(data, ignore_errors=True)
        proc = subprocess.Popen(
            [etcd, "--name", name, "--data-dir", data,
             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             f"--initial-cluster={name}={peer_url}", *args],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),
        )
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(endpoint + "/health", timeout=1) as r:
                    if r.status == 200:
                        return proc, endpoint, (port, peer)
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    with open(log, errors="replace") as f:
        tail = f.read()[-3000:]
    raise RuntimeError(f"etcd did not become healthy in three tries; {log} ends:\n{tail}")


class SessionEtcd:
    """The session's etcd, for `ESTIBA_TEST_STORE=etcd`: one member per network namespace
    that starts servers (started on first use there, on free loopback ports, data under
    /dev/shm when there is one: fsyncs there are cheap, as the SQLite runs' temp dirs).
    `stop_netns` stops a namespace's member when a test leaves its namespace; `stop` stops
    them all at the end of the session."""

    members = {}  # netns inode -> (process, endpoint, data dir, (client port, peer port))

    @classmethod
    def get(cls):
        ns = _netns()
        if ns in cls.members:
            proc, endpoint, d, _ = cls.members[ns]
            if proc.poll() is not None:
                raise RuntimeError(f"the session's etcd exited ({proc.returncode}); see {d}/etcd.log")
            return endpoint
        d = tempfile.mkdtemp(prefix="estiba-session-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        # Many servers come and go over a session: keep the history small.
        proc, endpoint, ports = launch_etcd(d, "session", [
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
            "--quota-backend-bytes", str(4 << 30)])
        cls.members[ns] = (proc, endpoint, d, ports)
        return endpoint

    @classmethod
    def endpoint(cls):
        """The calling namespace's member, if one runs."""
        m = cls.members.get(_netns())
        return m[1] if m else None

    @classmethod
    def listeners(cls):
        """The `127.0.0.1:PORT` addresses the calling namespace's member listens on (none
        without one): tests that look for ports left open tell them from a task's."""
        m = cls.members.get(_netns())
        return tuple(f"127.0.0.1:{p}" for p in m[3]) if m else ()

    @classmethod
    def stop_netns(cls):
        """Stops the calling thread's namespace's member (its servers are stopped already)."""
        m = cls.members.pop(_netns(), None)
        if m:
            m[0].kill()
            m[0].wait()
            shutil.rmtree(m[2], ignore_errors=True)

    @classmethod
    def stop(cls):
        for proc, _, d, _ in cls.members.values():
            proc.kill()
            proc.wait()
            shutil.rmtree(d, ignore_errors=True)
        cls.members.clear()


@pytest.fixture(scope="session", autouse=True)
def stop_session_etcd():
    yield
    SessionEtcd.stop()


class Estiba:
    """A running estiba server with its own data directory."""

    def __init__(self, data_dir, extra_args=(), env=None, node=False, host="127.0.0.1"):
        """`node`: whether this server runs tasks (its in-process agent); control-plane tests
        run without, so their tasks stay PROVISIONING. Servers that run tasks in one network
        namespace get networks of their own (bridges are named after their CIDR), unless the
        test chooses them. `host`: the address it listens on (another host's tests reach it
        on a bridge's address)."""
        self.data_dir = data_dir
        os.makedirs(data_dir, exist_ok=True)
        self.port = free_port()
        self.host = host
        self.endpoint = f"http://{host}:{self.port}"
        self.extra_args = list(extra_args) + ["--local-node", "on" if node else "off"]
        if not host.startswith("127.") and not {"--auth", "--credentials"} & set(self.extra_args):
            # Off loopback the server verifies signatures by default; these tests' clients
            # sign with made-up keys.
            self.extra_args += ["--auth", "none"]
        if STORE == "etcd" and "--store" not in self.extra_args:
            # A prefix per object, kept across restarts: a restart finds its own state.
            self.extra_args += ["--store", "etcd", "--etcd-endpoints", SessionEtcd.get(),
                                "--etcd-prefix", f"/t-{uuid.uuid4().hex}/"]
        if node and "--vpc-cidr" not in self.extra_args:
            n = next(_networks) % 100
            self.extra_args += ["--vpc-cidr", f"10.{100 + n}.0.0/16", "--bridge-cidr", f"10.{200 + n % 50}.{n}.0/24"]

        self.env = env or {}
        self.node = node
        self.proc = None
        self.log_path = os.path.join(data_dir, "server.log")

    def start(self):
        env = dict(os.environ)
        env.setdefault("ESTIBA_LOG", "info")
        env.update(self.env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "server", "--listen", f"{self.host}:{self.port}", "--data-dir", self.data_dir] + self.extra_args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"estiba exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as r:
                    if r.status == 200:
                        if self.node:
                            # Servers that run tasks get the `default` cluster their tests'
                            # RunTask calls without a cluster use (ECS does not make it).
                            self.client().create_cluster()
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"estiba did not become ready:\n{self.log()}")

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def drain(self, timeout=60):
        """Deletes every service and stops every task, and waits until all tasks are STOPPED:
        containers outlive the server by design, so a test that leaves tasks running leaves
        them on the machine."""
        ecs = self.client()

        def active_clusters():
            # Deleted clusters stay listed for a while; they hold nothing.
            arns = ecs.list_clusters()["clusterArns"]
            return [c["clusterArn"] for c in ecs.describe_clusters(clusters=arns)["clusters"] if c["status"] == "ACTIVE"] if arns else []

        for cluster in active_clusters():
            for svc in ecs.list_services(cluster=cluster, maxResults=100)["serviceArns"]:
                ecs.delete_service(cluster=cluster, service=svc, force=True)
            for arn in ecs.list_tasks(cluster=cluster, maxResults=100)["taskArns"]:
                ecs.stop_task(cluster=cluster, task=arn, reason="test clean-up")

        def all_stopped():
            for cluster in active_clusters():
                for status in ("RUNNING", "STOPPED"):
                    arns = ecs.list_tasks(cluster=cluster, desiredStatus=status, maxResults=100)["taskArns"]
                    if arns and any(t["lastStatus"] != "STOPPED" for t in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]):
                        return False
            return True
        wait_until(all_stopped, timeout=timeout, what="every task STOPPED")

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def client(self, service="ecs", region="us-east-1", access_key="test"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key="test",
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )

    def aws(self, *args, region="us-east-1", check=True, access_key="test"):
        """Runs the AWS CLI against this server; returns parsed JSON output (or None)."""
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=access_key,
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION=region,
            AWS_PAGER="",
            AWS_MAX_ATTEMPTS="1",
        )
        p = subprocess.run(
            [AWS_CLI, "--endpoint-url", self.endpoint, "--output", "json"] + list(args),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        if not check:
            return p
        return json.loads(p.stdout) if p.stdout.strip() else None


@pytest.fixture
def estiba(tmp_path):
    """A fresh server for one test."""
    e = Estiba(str(tmp_path)).start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def shared():
    """One server shared by a module's tests (they use unique names)."""
    d = tempfile.mkdtemp(prefix="estiba-e2e-")
    e = Estiba(d).start()
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on loopback, for a module whose tests run containers."""
    import images as img

    r = img.DockerRegistry(str(tmp_path_factory.mktemp("registry")), free_port())
    yield r
    r.stop()


@pytest.fixture(scope="module")
def busybox(registry):
    """A busybox image in the module's `registry`: its reference (`host:port/busybox:latest`)."""
    import images as img

    return img.busybox_image(registry.client, "busybox", "latest")


@contextlib.contextmanager
def running_node(tmp_path_factory, *extra_args, name="node"):
    """A server that runs tasks, for a module's tests; on the way out every service is
    deleted and every task stopped (containers outlive the server), then it stops."""
    e = Estiba(str(tmp_path_factory.mktemp(name)), extra_args=list(extra_args), node=True).start()
    try:
        yield e
    finally:
        e.drain()
        e.stop()


@pytest.fixture
def ecs(shared):
    return shared.client()


def stored_state(server):
    """Everything a server's store holds, as bytes (the SQLite files, or its etcd prefix):
    for checks that a value is not kept in plaintext."""
    if "--etcd-prefix" in server.extra_args:
        args = server.extra_args
        endpoints = args[args.index("--etcd-endpoints") + 1]
        prefix = args[args.index("--etcd-prefix") + 1]
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                           "range_end": base64.b64encode(end.encode()).decode()}).encode()
        url = endpoints.split(",")[0].rstrip("/") + "/v3/kv/range"
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10) as r:
            kvs = json.loads(r.read()).get("kvs", [])
        return b"".join(base64.b64decode(kv["key"]) + base64.b64decode(kv.get("value", "")) for kv in kvs)
    blob = b""
    for f in os.listdir(server.data_dir):
        if f.startswith("state.db"):
            with open(os.path.join(server.data_dir, f), "rb") as fh:
                blob += fh.read()
    return blob


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def error_message(excinfo):
    return excinfo.value.response["Error"]["Message"]


FARGATE_CONTAINER = {"name": "app", "image": "busybox", "portMappings": [{"containerPort": 80}]}


def register_fargate(ecs, family, containers=None, **kw):
    args = dict(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=containers or [FARGATE_CONTAINER],
    )
    args.update(kw)
    return ecs.register_task_definition(**args)["taskDefinition"]


AWSVPC = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"], "securityGroups": ["sg-12345678"]}}


def join_ec2(ecs):
    """Creates cluster ec2 and waits for the node started with `--join-cluster ec2` to join it."""
    ecs.create_cluster(clusterName="ec2")
    wait_until(lambda: ecs.list_container_instances(cluster="ec2")["containerInstanceArns"], timeout=20,
               what="the machine joining cluster ec2")


def health_check_status(ecs, image, check, network, cluster="ec2"):
    """Runs one EC2 task whose container's health check is the shell command `check`, and
    returns the container's first verdict (HEALTHY or UNHEALTHY); the task is stopped after."""
    fam = unique("h")
    ecs.register_task_definition(family=fam, networkMode="awsvpc", cpu="256", memory="512", containerDefinitions=[{
        "name": "app", "image": image, "memory": 64, "command": ["sleep", "600"], "stopTimeout": 2,
        "healthCheck": {"command": ["CMD-SHELL", check], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}}])
    arn = ecs.run_task(taskDefinition=fam, cluster=cluster, launchType="EC2",
                       networkConfiguration=network)["tasks"][0]["taskArn"]
    try:
        c = wait_until(lambda: (c := ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["containers"][0])
                       .get("healthStatus") in ("HEALTHY", "UNHEALTHY") and c, timeout=40, what="a health status")
        return c["healthStatus"]
    finally:
        ecs.stop_task(cluster=cluster, task=arn)


def wait_until(fn, timeout=15.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
