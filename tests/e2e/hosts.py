"""Machines for many-machine tests: each host is a network namespace held by a `sleep`
process, joined by a veth to a bridge in the test's own namespace (the underlay), where an
`estiba agent` runs; plus the helpers those tests share."""

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from conftest import BIN, wait_until

# Fetches a URL from whichever host runs it (python3 is on every host: they share the files).
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')"


def bridge_up(name, ip_cidr):
    """The underlay: a bridge in the test's namespace holding `ip_cidr` (the servers' address)."""
    sh("ip", "link", "add", name, "type", "bridge")
    sh("ip", "addr", "add", ip_cidr, "dev", name)
    sh("ip", "link", "set", name, "up")


@contextlib.contextmanager
def underlay(name, ip_cidr):
    """The bridge of `bridge_up` for the time of a `with` block (a module fixture's life)."""
    bridge_up(name, ip_cidr)
    try:
        yield name
    finally:
        sh("ip", "link", "del", name, check=False)


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


class Host:
    """A machine: a network namespace held by a `sleep` process, on the bridge at `ip`, where
    an agent runs."""

    def __init__(self, name, ip, data_dir, bridge):
        self.name, self.ip, self.data_dir = name, ip, data_dir
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
        time.sleep(0.1)
        veth = f"v-{name}"[:15]
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(self.holder.pid))
        sh("ip", "link", "set", veth, "master", bridge, "up")
        self.run("ip", "link", "set", "lo", "up")
        self.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.run("ip", "link", "set", "eth0", "up")
        self.agent = None
        self.log_path = os.path.join(data_dir, "agent.log")

    def run(self, *args, check=True):
        return sh("nsenter", "-t", str(self.holder.pid), "-n", "--", *args, check=check)

    def start_agent(self, server, *flags, token):
        """Starts `estiba agent` for `server` (a server, or a list of them: its URLs in order)."""
        servers = ",".join(s.endpoint for s in (server if isinstance(server, list) else [server]))
        log = open(self.log_path, "ab")
        self.agent = subprocess.Popen(
            ["nsenter", "-t", str(self.holder.pid), "-n", "--", BIN, "agent", "--server", servers,
             "--join-token", token, "--node-id", self.name, "--data-dir", self.data_dir, *flags],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ESTIBA_LOG="info"))
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-6000:]

    def stop_agent(self, sig=signal.SIGTERM):
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()

    def close(self):
        self.stop_agent()
        kill_holders(self.data_dir)
        self.holder.kill()
        self.holder.wait()


def kill_holders(data_dir):
    """Kills every process that still holds a file, its root or its working directory under
    `data_dir`: the supervisors and containers of tasks the host's agent never got to stop (a
    host cut off from the servers keeps its containers running, by design)."""
    root = os.path.realpath(data_dir) + "/"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            links = [f"/proc/{pid}/root", f"/proc/{pid}/cwd"] + [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target.startswith(root):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
                break


def nodes(server):
    with urllib.request.urlopen(f"{server.endpoint}/_estiba/nodes", timeout=5) as r:
        return {n["id"]: n for n in json.load(r)}


def connected(server, host, timeout=20):
    return wait_until(lambda: nodes(server).get(host.name, {}).get("connected") and nodes(server)[host.name],
                      timeout=timeout, what=f"{host.name} connected")


def wait_task(ecs, arn, status, cluster="default", timeout=60):
    def get():
        t = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        if t["lastStatus"] == "STOPPED" and status != "STOPPED":
            raise AssertionError(f"task stopped: {t.get('stoppedReason')} {t.get('containers')}")
        return t if t["lastStatus"] == status else None
    return wait_until(get, timeout=timeout, interval=0.2, what=f"task {status}")


def private_ip(task):
    for a in task.get("attachments", []):
        for d in a.get("details", []):
            if d["name"] == "privateIPv4Address":
                return d["value"]
    return None


def agent_api(server, method, path, token, body=None):
    """One call to the agent API (`/_estiba/agent/v1/PATH`) with `token` as the bearer (none if
    `token` is None). Returns (status, body) and never raises on an HTTP error status."""
    req = urllib.request.Request(f"{server.endpoint}/_estiba/agent/v1/{path}", data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(1 << 16)
    except urllib.error.HTTPError as e:
        return e.code, e.read()
