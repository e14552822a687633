"""Several servers on one etcd share what the versioned store does not hold: registry blobs
(fetched from the server that has them), CloudWatch Logs events and metric datapoints (owned by
the leader: followers forward those APIs to it, and it replicates what it ingests to them).
Control plane only: the servers run no node."""

import hashlib
import json
import os
import time
import urllib.error
import urllib.request

import pytest

import images as img

from conftest import Estiba, unique, wait_until
from test_etcd import ETCD, Etcd, health, small_image

pytestmark = pytest.mark.skipif(not ETCD, reason="no etcd binary (install Debian's etcd-server)")

TOKEN = "peer-token-" + "x" * 24


@pytest.fixture
def etcd():
    e = Etcd()
    yield e
    e.stop()


@pytest.fixture
def servers(tmp_path, etcd):
    """Two servers on one etcd prefix with a shared join token: (leader, follower)."""
    tokens = tmp_path / "join-tokens"
    tokens.write_text(f"# shared by the servers\n{TOKEN}\n")
    args = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--join-tokens", str(tokens),
            "--metric-period", "2s"]
    a = Estiba(str(tmp_path / "a"), extra_args=args).start()
    b = Estiba(str(tmp_path / "b"), extra_args=args).start()
    try:
        wait_until(lambda: [health(a)["leader"], health(b)["leader"]].count(True) == 1, timeout=15,
                   what="exactly one leader")
        yield (a, b) if health(a)["leader"] else (b, a)
    finally:
        a.stop()
        b.stop()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.mark.parametrize("push_to", ["leader", "follower"])
def test_an_image_pushed_to_one_server_is_pulled_from_the_other(servers, push_to):
    leader, follower = servers
    src, dst = (leader, follower) if push_to == "leader" else (follower, leader)
    repo = unique("shared")
    src.client("ecr").create_repository(repositoryName=repo)
    payload = os.urandom(300_000)
    digest = small_image(img.Registry(src.endpoint), repo, "v1", payload)

    # The manifest and every blob it names, from the other server (once its view has the
    # image: each server reads from its own watch-fed view).
    url = f"{dst.endpoint}/v2/{repo}/manifests/v1"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    wait_until(lambda: get(url, accept)[0] != 404, timeout=10, what="the image in the other server's view")
    status, headers, body = get(url, accept)
    assert status == 200, body
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    assert headers["docker-content-digest"] == digest
    manifest = json.loads(body)
    for d in [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        status, headers, blob = get(f"{dst.endpoint}/v2/{repo}/blobs/{d}")
        assert status == 200, blob
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == d
        # Now on the other server's own disk.
        assert os.path.exists(os.path.join(dst.data_dir, "registry", "blobs", "sha256", d.split(":")[1]))
    # A range of a blob fetched earlier is served from the local copy.
    layer = manifest["layers"][0]["digest"]
    status, _, part = get(f"{dst.endpoint}/v2/{repo}/blobs/{layer}", {"Range": "bytes=0-9"})
    assert status == 206 and len(part) == 10
    # ECR's BatchGetImage on the other server answers the manifest too.
    got = dst.client("ecr").batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [digest] and got["failures"] == []
    # A blob no repository holds is unknown on both, as before.
    missing = "sha256:" + hashlib.sha256(b"nothing").hexdigest()
    for s in (leader, follower):
        status, _, body = get(f"{s.endpoint}/v2/{repo}/blobs/{missing}")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_the_peer_api_wants_a_join_token(servers):
    leader, follower = servers
    repo = unique("tok")
    leader.client("ecr").create_repository(repositoryName=repo)
    digest = small_image(img.Registry(leader.endpoint), repo, "v1", b"token test")
    url = f"{leader.endpoint}/_estiba/peer/v1/blobs/{digest}"
    assert get(url)[0] == 401
    assert get(url, {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == digest
    # A peer serves only what is on its own disk: it never fetches on another's behalf.
    other = "sha256:" + hashlib.sha256(b"elsewhere").hexdigest()
    assert get(f"{follower.endpoint}/_estiba/peer/v1/blobs/{other}", {"Authorization": f"Bearer {TOKEN}"})[0] == 404
