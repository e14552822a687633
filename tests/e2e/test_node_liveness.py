"""Node liveness through the agent API, without containers: nodes here are this test speaking
the agent API as an agent would. A node is connected while it reports within the node lease
(with etcd: while its lease key lives), heartbeats that say nothing new are not written, and a
node lost for ten leases with no task left gives its address blocks back."""

import json
import os
import time

import pytest

from conftest import Estiba, wait_until
from hosts import agent_api, nodes

TOKEN = "liveness-token"
LEASE = 1
SUBNET = "172.31.16.0/20"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("liveness"))
    tokens = os.path.join(d, "join-tokens")
    with open(tokens, "w") as f:
        f.write(f"{TOKEN}\n")
    e = Estiba(d, extra_args=["--join-tokens", tokens, "--node-lease", f"{LEASE}s"]).start()
    yield e
    e.stop()


def report(server, node, avail=4 << 30):
    status = {"id": node, "memAvailableBytes": avail, "memTotalBytes": 8 << 30, "memFloorBytes": 256 << 20,
              "heartbeatAt": time.time(), "executor": "native", "fargate": True, "address": "10.9.0.5"}
    status, body = agent_api(server, "PUT", f"nodes/{node}", TOKEN, json.dumps(status).encode())
    assert status == 204, body


def node(server, node_id):
    return nodes(server).get(node_id)


def claim(server, node_id, known=()):
    status, body = agent_api(server, "POST", f"nodes/{node_id}/blocks", TOKEN,
                             json.dumps({"subnet": SUBNET, "known": list(known)}).encode())
    assert status == 200, body
    answer = json.loads(body)
    assert "Ok" in answer, answer
    return answer["Ok"]


def test_a_node_is_connected_while_it_reports_and_heartbeats_are_not_written(server):
    report(server, "live-a")
    n = wait_until(lambda: node(server, "live-a"), what="the node's report")
    assert n["connected"] is True, n
    written = n["heartbeatAt"]
    # Reports that say nothing new keep it connected without rewriting its document.
    for _ in range(4):
        time.sleep(LEASE / 2)
        report(server, "live-a", avail=(4 << 30) + (1 << 20))
        assert node(server, "live-a")["connected"] is True
    assert node(server, "live-a")["heartbeatAt"] == written
    # Memory below the node's floor is news: written at once.
    report(server, "live-a", avail=100 << 20)
    wait_until(lambda: node(server, "live-a")["memAvailableBytes"] == 100 << 20, what="the low-memory report")
    # Silent for longer than the lease (with etcd: its lease ran out): lost, and marked so.
    wait_until(lambda: (lambda n: not n["connected"] and n.get("lostAt"))(node(server, "live-a")),
               timeout=15, what="the silent node lost")
    # It reports again: connected, and no longer marked lost.
    report(server, "live-a")
    wait_until(lambda: (lambda n: n["connected"] and "lostAt" not in n)(node(server, "live-a")),
               timeout=10, what="the node back")


def test_a_node_lost_for_ten_leases_gives_its_address_blocks_back(server):
    report(server, "blocks-a")
    first = claim(server, "blocks-a")
    report(server, "blocks-b")
    second = claim(server, "blocks-b")
    assert first != second
    # A node asking again, knowing its block, gets another: the first stays taken.
    assert claim(server, "blocks-b", known=[second]) not in (first, second)
    # blocks-a falls silent; blocks-b keeps reporting. Ten leases after blocks-a is found lost
    # its block is free again (the lowest free block of the subnet); blocks-b's are not.
    def lost():
        report(server, "blocks-b")
        n = node(server, "blocks-a")
        return n if n.get("lostAt") else None

    wait_until(lost, timeout=15, what="blocks-a lost")
    end = time.time() + 10 * LEASE + 4
    while time.time() < end:
        report(server, "blocks-b")
        time.sleep(0.5)
    report(server, "blocks-c")
    got = claim(server, "blocks-c")
    assert got == first, f"blocks-a's block {first} was not given back (blocks-c got {got})"
    assert node(server, "blocks-a")["connected"] is False
    assert node(server, "blocks-b")["connected"] is True
