"""Durability: every acknowledged write survives kill -9 of the server."""

import threading

from conftest import Estiba, unique


def test_acknowledged_writes_survive_kill_9(tmp_path):
    e = Estiba(str(tmp_path)).start()
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        ecs = e.client()
        i = 0
        while not stop.is_set():
            name = f"w{n}-{i}"
            try:
                ecs.create_cluster(clusterName=name)
            except Exception:
                return  # the server died mid-request: this write was never acknowledged
            with lock:
                acked.append(name)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    # Let a burst of writes through, then kill the server in the middle of it.
    import time
    deadline = time.time() + 10
    while time.time() < deadline:
        with lock:
            if len(acked) >= 300:
                break
        time.sleep(0.01)
    e.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) >= 300, f"only {len(acked)} writes before the kill"
    e.start()
    ecs = e.client()
    present = set()
    for page in ecs.get_paginator("list_clusters").paginate():
        present.update(a.rsplit("/", 1)[1] for a in page["clusterArns"])
    missing = [n for n in acked if n not in present]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # And the server answers new writes.
    ecs.create_cluster(clusterName=unique("after"))
    e.stop()


def test_sigterm_stops_cleanly(tmp_path):
    e = Estiba(str(tmp_path)).start()
    e.client().create_cluster(clusterName="x")
    assert e.stop() == 0
    e.start()
    assert e.client().describe_clusters(clusters=["x"])["clusters"][0]["status"] == "ACTIVE"
    e.stop()
