"""The VPC resolver: every node serves DNS at the VPC's base address plus two (172.31.0.2 for
the default VPC), task networks (awsvpc and bridge) use it, and it answers tasks' private DNS
names and their reverse names from the control plane's state, with authority; the rest goes
to the host's name servers (none inside a test's namespace: SERVFAIL).

Runs like test_network.py: in a network namespace of the test's own, with real containers."""

import os
import random
import socket
import struct
import time

import pytest

from conftest import isolated, wait_until
from test_network import NET, SERVE, eni, node  # noqa: F401 (the node fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root"),
    pytest.mark.skipif(not isolated(), reason="network tests run inside a network namespace with no route out"),
]

RESOLVER = "172.31.0.2"
TYPES = {"A": 1, "PTR": 12, "SRV": 33, "AAAA": 28}


def query(name, qtype="A", tcp=False, server=RESOLVER):
    """Asks `server` one question; returns (rcode, flags, answer records as (type, rdata bytes))."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", TYPES[qtype], 1)
    if tcp:
        with socket.create_connection((server, 53), timeout=5) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", s.recv(2))[0]
            data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(q, (server, 53))
            data = s.recv(65535)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid
    i = 12
    for _ in range(qd):
        i = skip_name(data, i) + 4
    answers = []
    for _ in range(an):
        i = skip_name(data, i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        answers.append((rtype, data[i + 10:i + 10 + rdlen]))
        i += 10 + rdlen
    return flags & 0xF, flags, answers


def skip_name(data, i):
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0:
            return i + 2
        i += n + 1


def ipv4s(answers):
    return sorted(socket.inet_ntoa(r) for t, r in answers if t == 1)


def private_name(ip):
    return f"ip-{ip.replace('.', '-')}.ec2.internal"


def test_private_names_resolve_inside_tasks_and_from_the_host(node):
    fam = node.register([{"name": "app", "command": ["sh", "-c", SERVE]}])
    a = node.run(fam)
    ip_a = eni(node.wait(a, "RUNNING"))["privateIPv4Address"]
    name_a = private_name(ip_a)

    # From the host, with authority, over UDP and TCP; the reverse name too.
    rcode, flags, ans = query(name_a)
    assert (rcode, ipv4s(ans)) == (0, [ip_a]) and flags & 0x0400, "an authoritative answer"
    assert ipv4s(query(name_a, tcp=True)[2]) == [ip_a]
    rev = ".".join(reversed(ip_a.split("."))) + ".in-addr.arpa"
    rcode, _, ans = query(rev, "PTR")
    assert rcode == 0 and ans and b"ip-" in ans[0][1], ans
    # A name of ours that does not exist: NXDOMAIN; one that exists without the type: NODATA.
    assert query(private_name("172.31.9.9"))[0] == 3
    rcode, _, ans = query(name_a, "AAAA")
    assert (rcode, ans) == (0, [])
    # Not ours, and no upstream in the test's namespace: SERVFAIL.
    assert query("example.com")[0] == 2

    # Inside an awsvpc task and a bridge task: resolv.conf points at the resolver.
    for mode, run in (("awsvpc", node.run), ("bridge", node.run_ec2)):
        cli = node.register([{"name": "cli", "command": ["sh", "-c",
                              f"cat /etc/resolv.conf; nslookup {name_a} && nslookup {ip_a}"]}], mode=mode)
        b = run(cli)
        tb = node.wait(b, "STOPPED")
        out = node.logs(b)
        assert tb["containers"][0]["exitCode"] == 0, (mode, tb.get("stoppedReason"), out)
        assert f"nameserver {RESOLVER}" in out and "search ec2.internal" in out, out
        assert ip_a in out and name_a in out, out

    # A stopped task's name goes within a second.
    node.ecs.stop_task(cluster="default", task=a)
    node.wait(a, "STOPPED")
    wait_until(lambda: query(name_a)[0] == 3, timeout=1.5, interval=0.05, what="the stopped task's name gone")
