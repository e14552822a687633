"""ECR: the registry on estiba's own listener (`/v2/`, the OCI distribution API) and the ECR
API over it, driven by boto3, the AWS CLI, a plain HTTP client written against the OCI
distribution spec, and the real clients (docker, podman, skopeo) when they are installed."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import images as img
from conftest import Estiba, error_code, error_message, isolated, unique, wait_until

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    e = Estiba(str(tmp_path_factory.mktemp("ecr"))).start()
    yield e
    e.stop()


@pytest.fixture
def ecr(server):
    return server.client("ecr")


def v2(server, auth=None):
    c = img.Registry(server.endpoint)
    if auth:
        c.auth = auth
    return c


def repo(ecr, **kw):
    name = unique("repo").lower()
    return ecr.create_repository(repositoryName=name, **kw)["repository"]


def small_image(client, name, tag, payload=b"hello"):
    """Pushes a one-layer image (its layer holds `payload`); returns (manifest digest, manifest bytes)."""
    layer = img.tar_layer([("hello.txt", payload)])
    blob, diff_id, media = layer
    ldigest = client.push_blob(name, blob)
    cfg = img.config_blob([diff_id])
    cdigest = client.push_blob(name, cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": len(cfg)},
        "layers": [{"mediaType": media, "digest": ldigest, "size": len(blob)}],
    }
    data = json.dumps(manifest).encode()
    status, headers, body = client.request("PUT", f"/v2/{name}/manifests/{tag}", data, {"Content-Type": OCI_MANIFEST})
    assert status == 201, (status, body)
    assert headers.get("Docker-Content-Digest") == img.sha256(data)
    return img.sha256(data), data


def err(body):
    return json.loads(body)["errors"][0]["code"]


# --- repositories -----------------------------------------------------------------------


def test_repositories(ecr, server):
    name = unique("app").lower()
    r = ecr.create_repository(repositoryName=name, tags=[{"Key": "team", "Value": "a"}])["repository"]
    assert r["repositoryName"] == name
    assert r["repositoryUri"] == f"127.0.0.1:{server.port}/{name}"
    assert r["repositoryArn"] == f"arn:aws:ecr:us-east-1:000000000000:repository/{name}"
    assert r["registryId"] == "000000000000"
    assert r["imageTagMutability"] == "MUTABLE"
    assert r["imageScanningConfiguration"] == {"scanOnPush": False}
    assert r["encryptionConfiguration"] == {"encryptionType": "AES256"}

    with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException) as e:
        ecr.create_repository(repositoryName=name)
    assert f"The repository with name '{name}' already exists" in error_message(e)
    for bad in ["UPPER", "-lead", "a//b", "ab-", "a__-b"]:
        with pytest.raises(ecr.exceptions.ClientError) as e:
            ecr.create_repository(repositoryName=bad)
        assert error_code(e) == "InvalidParameterException", bad

    got = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert got == [r]
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException) as e:
        ecr.describe_repositories(repositoryNames=["nope-" + name])
    assert "does not exist in the registry with id '000000000000'" in error_message(e)

    names = [repo(ecr)["repositoryName"] for _ in range(3)]
    seen, token = [], None
    while True:
        kw = {"maxResults": 2}
        if token:
            kw["nextToken"] = token
        page = ecr.describe_repositories(**kw)
        seen += [x["repositoryName"] for x in page["repositories"]]
        token = page.get("nextToken")
        if not token:
            break
    assert set(names + [name]) <= set(seen)
    assert len(seen) == len(set(seen))

    # The CLI sees the same.
    out = server.aws("ecr", "describe-repositories", "--repository-names", name)
    assert out["repositories"][0]["repositoryUri"] == r["repositoryUri"]

    # Not empty: refused without force.
    small_image(v2(server), name, "v1")
    with pytest.raises(ecr.exceptions.RepositoryNotEmptyException):
        ecr.delete_repository(repositoryName=name)
    d = ecr.delete_repository(repositoryName=name, force=True)["repository"]
    assert d["repositoryName"] == name
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_images(repositoryName=name)
    assert v2(server).request("GET", f"/v2/{name}/manifests/v1")[0] == 404


# --- the distribution API ---------------------------------------------------------------


def test_push_and_pull_by_the_spec(ecr, server):
    name = repo(ecr)["repositoryName"]
    c = v2(server)
    status, headers, body = c.request("GET", "/v2/")
    assert status == 200 and headers.get("Docker-Distribution-API-Version") == "registry/2.0"

    digest, data = small_image(c, name, "v1")
    for ref in ["v1", digest]:
        status, headers, body = c.request("GET", f"/v2/{name}/manifests/{ref}")
        assert status == 200 and body == data
        assert headers["Content-Type"] == OCI_MANIFEST
        assert headers["Docker-Content-Digest"] == digest
        status, headers, body = c.request("HEAD", f"/v2/{name}/manifests/{ref}")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(data)
    assert c.request("GET", f"/v2/{name}/manifests/nope")[0] == 404
    assert err(c.request("GET", f"/v2/{name}/manifests/nope")[2]) == "MANIFEST_UNKNOWN"

    # Blob GET, HEAD and Range.
    manifest = json.loads(data)
    layer = manifest["layers"][0]
    status, headers, blob = c.request("GET", f"/v2/{name}/blobs/{layer['digest']}")
    assert status == 200 and img.sha256(blob) == layer["digest"] and len(blob) == layer["size"]
    status, headers, part = c.request("GET", f"/v2/{name}/blobs/{layer['digest']}", headers={"Range": "bytes=10-19"})
    assert status == 206 and part == blob[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(blob)}"
    status, headers, _ = c.request("HEAD", f"/v2/{name}/blobs/{layer['digest']}")
    assert status == 200 and int(headers["Content-Length"]) == len(blob)
    status, _, body = c.request("GET", f"/v2/{name}/blobs/sha256:{'0' * 64}")
    assert status == 404 and err(body) == "BLOB_UNKNOWN"

    # Chunked upload with Content-Range, resumable status, then the last chunk with PUT.
    data2 = os.urandom(300_000)
    d2 = img.sha256(data2)
    status, headers, _ = c.request("POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202
    loc = headers["Location"]
    status, headers, _ = c.request("PATCH", loc, data2[:100_000], {"Content-Range": "0-99999", "Content-Type": "application/octet-stream"})
    assert status == 202 and headers["Range"] == "0-99999"
    status, headers, _ = c.request("GET", loc)
    assert status == 204 and headers["Range"] == "0-99999"
    # Out of order: refused with 416, the upload is intact.
    status, _, _ = c.request("PATCH", loc, data2[200_000:], {"Content-Range": "200000-299999"})
    assert status == 416
    status, headers, _ = c.request("PATCH", loc, data2[100_000:200_000], {"Content-Range": "100000-199999"})
    assert status == 202 and headers["Range"] == "0-199999"
    status, headers, _ = c.request("PUT", f"{loc}?digest={d2}", data2[200_000:])
    assert status == 201 and headers["Docker-Content-Digest"] == d2
    assert c.request("GET", f"/v2/{name}/blobs/{d2}")[2] == data2
    assert c.request("GET", loc)[0] == 404

    # Cross-repository mount.
    other = repo(ecr)["repositoryName"]
    assert c.request("HEAD", f"/v2/{other}/blobs/{d2}")[0] == 404
    status, headers, _ = c.request("POST", f"/v2/{other}/blobs/uploads/?mount={d2}&from={name}")
    assert status == 201 and headers["Location"].endswith(f"/v2/{other}/blobs/{d2}")
    assert c.request("HEAD", f"/v2/{other}/blobs/{d2}")[0] == 200
    # Mount from a repository without it: a plain upload starts.
    status, _, _ = c.request("POST", f"/v2/{other}/blobs/uploads/?mount=sha256:{'1' * 64}&from={name}")
    assert status == 202

    # Tags and catalog, with pagination.
    for t in ["a", "b", "c"]:
        c.request("PUT", f"/v2/{name}/manifests/{t}", data, {"Content-Type": OCI_MANIFEST})
    status, headers, body = c.request("GET", f"/v2/{name}/tags/list?n=2")
    assert json.loads(body) == {"name": name, "tags": ["a", "b"]}
    assert headers["Link"] == f'</v2/{name}/tags/list?n=2&last=b>; rel="next"'
    status, headers, body = c.request("GET", f"/v2/{name}/tags/list?n=2&last=b")
    assert json.loads(body)["tags"] == ["c", "v1"] and "Link" not in headers
    status, headers, body = c.request("GET", "/v2/_catalog?n=1")
    assert len(json.loads(body)["repositories"]) == 1 and 'rel="next"' in headers["Link"]
    status, _, body = c.request("GET", "/v2/_catalog")
    assert {name, other} <= set(json.loads(body)["repositories"])

    # Deletes: a tag, then the manifest, then a blob.
    assert c.request("DELETE", f"/v2/{name}/manifests/a")[0] == 202
    assert c.request("GET", f"/v2/{name}/manifests/a")[0] == 404
    assert c.request("GET", f"/v2/{name}/manifests/b")[0] == 200
    assert c.request("DELETE", f"/v2/{name}/manifests/{digest}")[0] == 202
    for ref in [digest, "b", "v1"]:
        assert c.request("GET", f"/v2/{name}/manifests/{ref}")[0] == 404
    assert c.request("DELETE", f"/v2/{name}/blobs/{d2}")[0] == 202
    assert c.request("HEAD", f"/v2/{name}/blobs/{d2}")[0] == 404
    assert c.request("HEAD", f"/v2/{other}/blobs/{d2}")[0] == 200, "still in the other repository"


def test_bad_input_stores_nothing(ecr, server):
    name = repo(ecr)["repositoryName"]
    c = v2(server)
    blob = os.urandom(5000)
    good = img.sha256(blob)
    uploads = os.path.join(server.data_dir, "registry", "uploads")
    uploads_before = set(os.listdir(uploads))

    # Wrong digest, monolithic and chunked: DIGEST_INVALID, no blob.
    status, _, body = c.request("POST", f"/v2/{name}/blobs/uploads/?digest=sha256:{'2' * 64}", blob)
    assert status == 400 and err(body) == "DIGEST_INVALID"
    status, headers, _ = c.request("POST", f"/v2/{name}/blobs/uploads/")
    loc = headers["Location"]
    status, _, body = c.request("PUT", f"{loc}?digest=sha256:{'3' * 64}", blob)
    assert status == 400 and err(body) == "DIGEST_INVALID"
    # A truncated upload: the digest of the whole, half the bytes.
    status, _, body = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={good}", blob[:2500])
    assert status == 400 and err(body) == "DIGEST_INVALID"
    assert c.request("HEAD", f"/v2/{name}/blobs/{good}")[0] == 404
    for bad in ["sha256:xyz", "md5:abc", "nothex"]:
        status, _, body = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={bad}", blob)
        assert status == 400 and err(body) == "DIGEST_INVALID", bad
    blobs = os.path.join(server.data_dir, "registry", "blobs", "sha256")
    assert good[7:] not in os.listdir(blobs)
    # The refused uploads left no file behind.
    assert set(os.listdir(uploads)) == uploads_before

    # Manifests: malformed, pointing at a missing blob, oversized, wrong media type.
    before = set(os.listdir(blobs))
    cases = [
        (b"{not json", OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{'4' * 64}", "size": 2}, "layers": []}).encode(), OCI_MANIFEST, 400, "MANIFEST_BLOB_UNKNOWN"),
        (json.dumps({"schemaVersion": 1, "name": name}).encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws", 400, "MANIFEST_INVALID"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode(), OCI_INDEX, 400, "MANIFEST_INVALID"),
        (b" " * (4 * 1024 * 1024 + 10), OCI_MANIFEST, 400, "SIZE_INVALID"),
    ]
    for body_, ctype, want_status, code in cases:
        status, _, body = c.request("PUT", f"/v2/{name}/manifests/t1", body_, {"Content-Type": ctype})
        assert (status, err(body)) == (want_status, code), body[:200]
    assert set(os.listdir(blobs)) == before, "a refused manifest stores nothing"
    assert json.loads(c.request("GET", f"/v2/{name}/tags/list")[2])["tags"] == []

    # A digest reference that does not match the body.
    digest, data = small_image(c, name, "ok")
    status, _, body = c.request("PUT", f"/v2/{name}/manifests/sha256:{'5' * 64}", data, {"Content-Type": OCI_MANIFEST})
    assert status == 400 and err(body) == "DIGEST_INVALID"
    status, _, body = c.request("PUT", f"/v2/{name}/manifests/bad:tag", data, {"Content-Type": OCI_MANIFEST})
    assert status == 400

    # Names: unknown, invalid, path traversal.
    status, _, body = c.request("POST", "/v2/no-such-repo/blobs/uploads/")
    assert status == 404 and err(body) == "NAME_UNKNOWN"
    for path in ["/v2/../../etc/manifests/x", "/v2/a/%2e%2e/manifests/x", "/v2/UPPER/manifests/x", "/v2/a//b/manifests/x"]:
        status, _, body = c.request("GET", path)
        assert status in (400, 404) and err(body) in ("NAME_INVALID", "NAME_UNKNOWN"), path
    # The server still serves.
    assert c.request("GET", f"/v2/{name}/manifests/ok")[0] == 200


def test_referrers(ecr, server):
    name = repo(ecr)["repositoryName"]
    c = v2(server)
    digest, data = small_image(c, name, "v1")
    empty = b"{}"
    edigest = c.push_blob(name, empty)
    sbom = b'{"sbom": true}'
    sdigest = c.push_blob(name, sbom)
    art = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": edigest, "size": 2},
        "layers": [{"mediaType": "application/json", "digest": sdigest, "size": len(sbom)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)},
        "annotations": {"org.example": "x"},
    }
    adata = json.dumps(art).encode()
    status, headers, _ = c.request("PUT", f"/v2/{name}/manifests/{img.sha256(adata)}", adata, {"Content-Type": OCI_MANIFEST})
    assert status == 201 and headers["OCI-Subject"] == digest
    status, headers, body = c.request("GET", f"/v2/{name}/referrers/{digest}")
    idx = json.loads(body)
    assert status == 200 and headers["Content-Type"] == OCI_INDEX
    assert idx["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": img.sha256(adata), "size": len(adata), "artifactType": "application/vnd.example.sbom", "annotations": {"org.example": "x"}}]
    status, headers, body = c.request("GET", f"/v2/{name}/referrers/{digest}?artifactType=application/other")
    assert json.loads(body)["manifests"] == [] and headers["OCI-Filters-Applied"] == "artifactType"
    # Nothing refers to the artifact.
    assert json.loads(c.request("GET", f"/v2/{name}/referrers/{img.sha256(adata)}")[2])["manifests"] == []
    # DescribeImages reports the subject and the artifact type.
    d = ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": img.sha256(adata)}])["imageDetails"][0]
    assert d["subjectManifestDigest"] == digest and d["artifactMediaType"] == "application/vnd.example.sbom"


# --- the ECR image API ------------------------------------------------------------------


def test_images_api(ecr, server):
    name = repo(ecr)["repositoryName"]
    c = v2(server)
    d1, m1 = small_image(c, name, "v1", b"one")
    d2, m2 = small_image(c, name, "v2", b"two")
    c.request("PUT", f"/v2/{name}/manifests/latest", m2, {"Content-Type": OCI_MANIFEST})

    ids = ecr.list_images(repositoryName=name)["imageIds"]
    assert sorted((i["imageDigest"], i.get("imageTag")) for i in ids) == sorted([(d1, "v1"), (d2, "latest"), (d2, "v2")])
    details = {d["imageDigest"]: d for d in ecr.describe_images(repositoryName=name)["imageDetails"]}
    assert sorted(details[d2]["imageTags"]) == ["latest", "v2"]
    layer_and_config = sum(x["size"] for x in [json.loads(m1)["config"]] + json.loads(m1)["layers"])
    assert details[d1]["imageSizeInBytes"] == layer_and_config
    assert details[d1]["imageManifestMediaType"] == OCI_MANIFEST
    assert details[d1]["registryId"] == "000000000000" and details[d1]["repositoryName"] == name
    assert details[d1]["imagePushedAt"].year >= 2024

    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}, {"imageTag": "missing"}, {"imageDigest": d2}])
    assert [i["imageManifest"] for i in got["images"]] == [m1.decode(), m2.decode()]
    assert got["images"][0]["imageId"] == {"imageDigest": d1, "imageTag": "v1"}
    assert got["failures"] == [{"imageId": {"imageTag": "missing"}, "failureCode": "ImageNotFound", "failureReason": "Requested image not found"}]

    # PutImage: retag, same again, digest mismatch, missing layers.
    r = ecr.put_image(repositoryName=name, imageManifest=m1.decode(), imageTag="stable")["image"]
    assert r["imageId"] == {"imageDigest": d1, "imageTag": "stable"}
    assert c.request("GET", f"/v2/{name}/manifests/stable")[2] == m1
    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=name, imageManifest=m1.decode(), imageTag="stable")
    with pytest.raises(ecr.exceptions.ImageDigestDoesNotMatchException):
        ecr.put_image(repositoryName=name, imageManifest=m1.decode(), imageTag="x", imageDigest=d2)
    orphan = json.loads(m1)
    orphan["layers"][0]["digest"] = f"sha256:{'6' * 64}"
    with pytest.raises(ecr.exceptions.LayersNotFoundException):
        ecr.put_image(repositoryName=name, imageManifest=json.dumps(orphan), imageTag="orphan")
    with pytest.raises(ecr.exceptions.ClientError) as e:
        ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "orphan"}])
    assert error_code(e) == "ImageNotFoundException"

    # Immutable tags: neither PutImage nor a docker-style push may move one.
    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException) as e:
        ecr.put_image(repositoryName=name, imageManifest=m2.decode(), imageTag="stable")
    assert "cannot be overwritten because the repository is immutable" in error_message(e)
    status, _, body = c.request("PUT", f"/v2/{name}/manifests/stable", m2, {"Content-Type": OCI_MANIFEST})
    assert status == 400 and err(body) == "TAG_INVALID"
    assert c.request("GET", f"/v2/{name}/manifests/stable")[2] == m1
    # New tags are fine; exclusions make some tags mutable again.
    ecr.put_image(repositoryName=name, imageManifest=m2.decode(), imageTag="fresh")
    ecr.put_image_tag_mutability(
        repositoryName=name,
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "lat*"}],
    )
    c.request("PUT", f"/v2/{name}/manifests/latest", m1, {"Content-Type": OCI_MANIFEST})
    assert c.request("GET", f"/v2/{name}/manifests/latest")[2] == m1
    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")

    # BatchDeleteImage: by tag (the image stays while tagged), by digest, and failures.
    r = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "fresh"}, {"imageTag": "ghost"}])
    assert r["imageIds"] == [{"imageDigest": d2, "imageTag": "fresh"}]
    assert r["failures"][0]["failureCode"] == "ImageNotFound"
    assert ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": d2}])["imageDetails"][0]["imageTags"] == ["v2"]
    ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v2"}])
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": d2}])
    r = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageDigest": d1}])
    assert r["imageIds"] == [{"imageDigest": d1}]
    assert ecr.list_images(repositoryName=name)["imageIds"] == []
    # Untagged filter.
    c.request("PUT", f"/v2/{name}/manifests/{d1}", m1, {"Content-Type": OCI_MANIFEST})
    assert ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})["imageIds"] == [{"imageDigest": d1}]
    assert ecr.list_images(repositoryName=name, filter={"tagStatus": "TAGGED"})["imageIds"] == []

    # The CLI drives the same operations.
    out = server.aws("ecr", "list-images", "--repository-name", name)
    assert out["imageIds"] == [{"imageDigest": d1}]
    layers = server.aws("ecr", "batch-check-layer-availability", "--repository-name", name, "--layer-digests", json.loads(m1)["layers"][0]["digest"], f"sha256:{'7' * 64}")
    assert layers["layers"][0]["layerAvailability"] == "AVAILABLE"
    assert layers["failures"][0]["failureCode"] == "MissingLayerDigest"


def test_policies_and_tags(ecr, server):
    r = repo(ecr)
    name, arn = r["repositoryName"], r["repositoryArn"]
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "all", "Effect": "Allow", "Principal": "*", "Action": "ecr:*"}]})
    assert ecr.set_repository_policy(repositoryName=name, policyText=policy)["policyText"] == policy
    assert ecr.get_repository_policy(repositoryName=name)["policyText"] == policy
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.set_repository_policy(repositoryName=name, policyText="{not json")
    assert ecr.get_repository_policy(repositoryName=name)["policyText"] == policy, "nothing lost"
    assert ecr.delete_repository_policy(repositoryName=name)["policyText"] == policy
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.delete_repository_policy(repositoryName=name)

    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=name)
    lp = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]})
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=lp)
    assert ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"] == lp
    bad = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]})
    with pytest.raises(ecr.exceptions.InvalidParameterException) as e:
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=bad)
    assert "tagPrefixList or tagPatternList is required" in error_message(e)
    assert ecr.delete_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"] == lp
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.delete_lifecycle_policy(repositoryName=name)

    ecr.tag_resource(resourceArn=arn, tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    ecr.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert ecr.list_tags_for_resource(resourceArn=arn)["tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.list_tags_for_resource(resourceArn="arn:aws:ecs:us-east-1:000000000000:cluster/x")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.tag_resource(resourceArn=arn + "-gone", tags=[{"Key": "a", "Value": "1"}])


def test_token_auth(tmp_path):
    e = Estiba(str(tmp_path), extra_args=["--registry-auth", "token"]).start()
    try:
        ecr = e.client("ecr")
        name = repo(ecr)["repositoryName"]
        status, headers, body = v2(e).request("GET", "/v2/")
        assert status == 401 and err(body) == "UNAUTHORIZED"
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert v2(e).request("GET", f"/v2/{name}/tags/list")[0] == 401
        bad = "Basic " + base64.b64encode(b"AWS:forged.token.1.abc").decode()
        assert v2(e, bad).request("GET", "/v2/")[0] == 401

        data = ecr.get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
        assert user == "AWS" and data["proxyEndpoint"] == f"http://127.0.0.1:{e.port}"
        assert data["expiresAt"].timestamp() > time.time() + 11 * 3600
        cli_password = e.aws("ecr", "get-login-password", check=False).stdout.strip()
        for pw in [password, cli_password]:
            c = img.Registry(e.endpoint, "AWS", pw)
            assert c.request("GET", "/v2/")[0] == 200
            small_image(c, name, "v1")
    finally:
        e.stop()


def test_lifecycle_policy_expires_and_blobs_are_collected(tmp_path):
    e = Estiba(str(tmp_path), extra_args=["--registry-gc-every", "1s", "--registry-gc-grace", "0s"]).start()
    try:
        ecr = e.client("ecr")
        name = repo(ecr)["repositoryName"]
        c = v2(e)
        digests = [small_image(c, name, f"build-{i}", f"payload {i}".encode())[0] for i in range(3)]
        blobs = os.path.join(str(tmp_path), "registry", "blobs", "sha256")
        before = len(os.listdir(blobs))
        lp = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["build-"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps(lp))
        wait_until(lambda: len(ecr.list_images(repositoryName=name)["imageIds"]) == 1, timeout=20, what="lifecycle expiry")
        assert ecr.list_images(repositoryName=name)["imageIds"] == [{"imageDigest": digests[2], "imageTag": "build-2"}]
        assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=name)
        # The expired images' manifests and layers leave the disk; the kept image still pulls.
        wait_until(lambda: len(os.listdir(blobs)) <= before - 4, timeout=20, what="garbage collection")
        status, _, body = c.request("GET", f"/v2/{name}/manifests/build-2")
        assert status == 200
        for d in json.loads(body)["layers"]:
            assert c.request("GET", f"/v2/{name}/blobs/{d['digest']}")[0] == 200
    finally:
        e.stop()


def test_gc_is_safe_while_pushes_go_on(tmp_path):
    """The collector runs every second with a 2 s grace while four clients push images that
    share a base layer and delete each one before pushing the next, so the base is unused most
    of the time and its link, uploaded once, is older than the grace period: clients only ask
    for it with HEAD. No accepted manifest may point at a missing blob, every push succeeds
    (the HEAD renews the link), and the deleted images' blobs leave the disk."""
    import threading
    e = Estiba(str(tmp_path), extra_args=["--registry-gc-every", "1s", "--registry-gc-grace", "2s"]).start()
    try:
        ecr = e.client("ecr")
        name = repo(ecr)["repositoryName"]
        base = img.tar_layer([("base.txt", b"shared base layer")])
        results, errors = [], []
        deadline = time.time() + 10

        def worker(w):
            try:
                c = v2(e)
                i = 0
                while True:
                    own = img.tar_layer([(f"own-{w}-{i}.txt", os.urandom(64))])
                    layers = [base, own]
                    descs = [{"mediaType": m, "digest": c.push_blob(name, b), "size": len(b)} for b, _, m in layers]
                    cfg = img.config_blob([d for _, d, _ in layers])
                    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": descs,
                                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.push_blob(name, cfg), "size": len(cfg)}}
                    data = json.dumps(manifest).encode()
                    status, _, body = c.request("PUT", f"/v2/{name}/manifests/w{w}-{i}", data, {"Content-Type": OCI_MANIFEST})
                    results.append((status, err(body) if status != 201 else None))
                    if time.time() > deadline:
                        return  # the last image stays
                    if status == 201:
                        assert c.request("DELETE", f"/v2/{name}/manifests/{img.sha256(data)}")[0] == 202
                    i += 1
                    time.sleep(0.05)
            except Exception as ex:  # reported below
                errors.append(ex)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) > 40, len(results)
        failed = [r for r in results if r[0] != 201]
        assert not failed, f"{len(failed)} of {len(results)} pushes failed: {set(failed)}"
        # Every image still listed is complete and every blob is what its digest says.
        c = v2(e)
        ids = ecr.list_images(repositoryName=name)["imageIds"]
        assert len(ids) == 4, ids
        for i in ids:
            status, _, body = c.request("GET", f"/v2/{name}/manifests/{i['imageDigest']}")
            assert status == 200
            m = json.loads(body)
            for d in [m["config"]] + m["layers"]:
                status, _, blob = c.request("GET", f"/v2/{name}/blobs/{d['digest']}")
                assert status == 200 and img.sha256(blob) == d["digest"], (status, d)
        # The deleted images' layers, configs and manifests leave the disk: 4 images × (own
        # layer, config, manifest) + the base remain.
        blobs = os.path.join(str(tmp_path), "registry", "blobs", "sha256")
        wait_until(lambda: len(os.listdir(blobs)) <= 4 * 3 + 1, timeout=20, what="garbage collection")
    finally:
        e.stop()


# --- real clients -----------------------------------------------------------------------


def test_skopeo_copies_both_ways(ecr, server, tmp_path):
    if not shutil.which("skopeo"):
        pytest.skip("skopeo not installed (apt-get install skopeo)")
    name = repo(ecr)["repositoryName"]
    digest, _ = small_image(v2(server), name, "src")
    host = f"127.0.0.1:{server.port}"
    layout = f"oci:{tmp_path}/layout:img"
    run = lambda *a: subprocess.run(["skopeo", "--insecure-policy", *a], check=True, capture_output=True, timeout=120)
    run("copy", "--src-tls-verify=false", f"docker://{host}/{name}:src", layout)
    run("copy", "--dest-tls-verify=false", layout, f"docker://{host}/{name}:copied")
    out = json.loads(run("inspect", "--tls-verify=false", f"docker://{host}/{name}:copied").stdout)
    assert out["Digest"] == digest
    tags = json.loads(run("list-tags", "--tls-verify=false", f"docker://{host}/{name}").stdout)["Tags"]
    assert sorted(tags) == ["copied", "src"]


def root_and(tool):
    return os.geteuid() == 0 and shutil.which(tool) is not None


@pytest.mark.skipif(not root_and("podman"), reason="podman push needs root and podman (apt-get install podman)")
def test_podman_push(ecr, server, tmp_path, request):
    name = repo(ecr)["repositoryName"]
    host = f"127.0.0.1:{server.port}"
    # podman refuses a runroot longer than 50 characters.
    runroot = tempfile.mkdtemp(prefix="pr-", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(runroot, ignore_errors=True))
    base = ["podman", "--root", f"{tmp_path}/root", "--runroot", runroot, "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    rootfs = tmp_path / "rootfs.tar"
    write_rootfs(rootfs)
    for args in (["import", str(rootfs), f"{host}/{name}:podman"], ["push", "--tls-verify=false", f"{host}/{name}:podman"]):
        r = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    ids = ecr.list_images(repositoryName=name)["imageIds"]
    assert [i.get("imageTag") for i in ids] == ["podman"]


def write_rootfs(path):
    """busybox as a plain tar, for `docker import` and `podman import`."""
    blob, _, _ = img.tar_layer(img.busybox_entries(), "none")
    with open(path, "wb") as f:
        f.write(blob)


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    if not root_and("dockerd") or not shutil.which("docker"):
        pytest.skip("docker push/pull needs root and docker.io (apt-get install docker.io)")
    if not isolated():
        pytest.skip("dockerd runs only inside a network namespace with no route out (use cargo xtask test)")
    work = str(tmp_path_factory.mktemp("d", numbered=True))
    sock = f"unix://{work}/docker.sock"
    proc = subprocess.Popen(
        ["dockerd", "--data-root", f"{work}/data", "--exec-root", f"{work}/exec", "-H", sock, "--pidfile", f"{work}/pid",
         "--bridge=none", "--iptables=false", "--ip6tables=false"],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/log", "w"),
    )
    docker = lambda *a, **kw: subprocess.run(["docker", "-H", sock, *a], capture_output=True, text=True, timeout=180, **kw)
    wait_until(lambda: docker("info").returncode == 0, timeout=60, what="dockerd")
    yield docker
    proc.terminate()
    proc.wait(30)


def test_docker_login_push_pull(tmp_path, dockerd):
    e = Estiba(str(tmp_path), extra_args=["--registry-auth", "token"]).start()
    try:
        docker = dockerd
        ecr = e.client("ecr")
        name = repo(ecr)["repositoryName"]
        host = f"127.0.0.1:{e.port}"
        rootfs = tmp_path / "rootfs.tar"
        write_rootfs(rootfs)
        r = docker("import", str(rootfs), f"{host}/{name}:v1")
        assert r.returncode == 0, r.stderr
        r = docker("push", f"{host}/{name}:v1")
        assert r.returncode != 0 and ("no basic auth credentials" in r.stderr or "unauthorized" in r.stderr.lower()), r.stderr
        password = e.aws("ecr", "get-login-password", check=False).stdout.strip()
        r = docker("login", "--username", "AWS", "--password-stdin", host, input=password)
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r.stderr
        r = docker("push", f"{host}/{name}:v1")
        assert r.returncode == 0, r.stderr
        detail = ecr.describe_images(repositoryName=name)["imageDetails"][0]
        assert detail["imageTags"] == ["v1"]
        assert detail["imageManifestMediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert detail["imageSizeInBytes"] > 1_000_000
        assert docker("rmi", f"{host}/{name}:v1").returncode == 0
        r = docker("pull", f"{host}/{name}:v1")
        assert r.returncode == 0, r.stderr
        assert detail["imageDigest"] in docker("inspect", "--format", "{{index .RepoDigests 0}}", f"{host}/{name}:v1").stdout
        docker("logout", host)
    finally:
        e.stop()
