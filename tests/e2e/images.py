"""Test images, built here from Debian's busybox-static and pushed over the OCI distribution
API to a registry on loopback (no image comes from the internet)."""

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import urllib.error
import urllib.request

BUSYBOX = "/bin/busybox"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar, name, data=b"", mode=0o644, kind=tarfile.REGTYPE, link="", uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.mtime = 1_700_000_000
    ti.linkname = link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tar_layer(entries, compress="gzip"):
    """entries: list of (name, data, mode, kind, link). Returns (blob, diff_id, media_type)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for e in entries:
            name, data, mode, kind, link = (list(e) + [b"", 0o644, tarfile.REGTYPE, ""][len(e) - 1 :])[:5]
            _add(t, name, data, mode, kind, link)
    plain = raw.getvalue()
    if compress == "gzip":
        blob = gzip.compress(plain, compresslevel=1, mtime=0)
        media = "application/vnd.oci.image.layer.v1.tar+gzip"
    elif compress == "zstd":
        blob = subprocess.run(["zstd", "-q", "-c"], input=plain, capture_output=True, check=True).stdout
        media = "application/vnd.oci.image.layer.v1.tar+zstd"
    else:
        blob = plain
        media = "application/vnd.oci.image.layer.v1.tar"
    return blob, sha256(plain), media


def busybox_entries():
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [
        ("bin/", b"", 0o755, tarfile.DIRTYPE, ""),
        ("bin/busybox", bb, 0o755),
        ("etc/", b"", 0o755, tarfile.DIRTYPE, ""),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\n"),
        ("tmp/", b"", 0o1777, tarfile.DIRTYPE, ""),
        ("root/", b"", 0o700, tarfile.DIRTYPE, ""),
        ("home/app/", b"", 0o755, tarfile.DIRTYPE, ""),
        ("www/", b"", 0o755, tarfile.DIRTYPE, ""),
        ("www/index.html", b"hello from a busybox image\n"),
    ]
    for a in applets:
        if a != "busybox":
            entries.append((f"bin/{a}", b"", 0o777, tarfile.SYMTYPE, "busybox"))
    return entries


def config_blob(diff_ids, cmd=None, entrypoint=None, env=None, workdir=None, user=None):
    cfg = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if cmd is not None:
        cfg["Cmd"] = cmd
    if entrypoint is not None:
        cfg["Entrypoint"] = entrypoint
    if workdir:
        cfg["WorkingDir"] = workdir
    if user:
        cfg["User"] = user
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "estiba tests"}],
    }
    return json.dumps(doc, sort_keys=True).encode()


class Headers(dict):
    """Response headers, looked up without regard to case (HTTP/1.1 names are case-insensitive)."""

    def __init__(self, items):
        super().__init__((k.lower(), v) for k, v in items.items())

    def __getitem__(self, k):
        return super().__getitem__(k.lower())

    def __contains__(self, k):
        return super().__contains__(k.lower())

    def get(self, k, default=None):
        return super().get(k.lower(), default)


class Registry:
    """A client for a registry at http://host:port, with optional basic credentials."""

    def __init__(self, endpoint, username=None, password=None):
        self.endpoint = endpoint.rstrip("/")
        self.auth = None
        if username:
            self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    @property
    def host(self):
        return self.endpoint.split("://", 1)[1]

    def request(self, method, path, data=None, headers=None):
        url = path if path.startswith("http") else self.endpoint + path
        req = urllib.request.Request(url, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, Headers(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, Headers(e.headers), e.read()

    def push_blob(self, repo, blob):
        digest = sha256(blob)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202, (status, body)
        loc = headers.get("Location") or headers.get("location")
        if loc.startswith("/"):
            loc = self.endpoint + loc
        sep = "&" if "?" in loc else "?"
        status, _, body = self.request("PUT", f"{loc}{sep}digest={digest}", blob, {"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    def push_manifest(self, repo, ref, manifest, media_type):
        data = json.dumps(manifest).encode()
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/{ref}", data, {"Content-Type": media_type})
        assert status == 201, (status, body)
        return sha256(data)

    def push_image(self, repo, tag, layers, cmd=None, entrypoint=None, env=None, workdir=None, user=None):
        """layers: list of (blob, diff_id, media_type). Returns the manifest digest."""
        descs = []
        for blob, _, media in layers:
            descs.append({"mediaType": media, "digest": self.push_blob(repo, blob), "size": len(blob)})
        cfg = config_blob([d for _, d, _ in layers], cmd, entrypoint, env, workdir, user)
        cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.push_blob(repo, cfg), "size": len(cfg)}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cdesc, "layers": descs}
        return self.push_manifest(repo, tag, manifest, "application/vnd.oci.image.manifest.v1+json")

    def push_index(self, repo, tag, platform_digests):
        """platform_digests: list of ((os, arch), manifest digest, size)."""
        manifests = [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": s, "platform": {"os": os_, "architecture": arch}}
            for (os_, arch), d, s in platform_digests
        ]
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        return self.push_manifest(repo, tag, idx, "application/vnd.oci.image.index.v1+json")


def busybox_image(registry, repo="busybox", tag="latest", cmd=None, compress="gzip", extra=None, **kw):
    """Pushes busybox as one layer (plus `extra` entries as a second one). Returns image URI."""
    layers = [tar_layer(busybox_entries(), compress)]
    if extra:
        layers.append(tar_layer(extra, compress))
    registry.push_image(repo, tag, layers, cmd=cmd if cmd is not None else ["sh"], **kw)
    return f"{registry.host}/{repo}:{tag}"


class DockerRegistry:
    """Debian's docker-registry (the reference distribution registry) on loopback."""

    def __init__(self, workdir, port):
        self.dir = os.path.join(workdir, "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (os.path.join(self.dir, "data"), port)
            )
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        self.client = Registry(f"http://127.0.0.1:{port}")
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.client.request("GET", "/v2/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


PYTHON_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip",
               "lib2to3", "__pycache__"}


def _ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
            libs.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def python_entries(botocore_services=("sts", "logs", "ecs")):
    """The host's Python (interpreter, shared libraries, standard library) and boto3 with its
    dependencies (botocore's data for `botocore_services` only), at the host's own paths, for
    an image on top of busybox's layer: an SDK that runs inside a task. Returns (entries, env)."""
    import importlib
    import sys
    import sysconfig

    files, dirs = {}, set()

    def add_file(path, arcname=None):
        arc = (arcname or path).lstrip("/")
        if arc in files:
            return
        parent = os.path.dirname(arc)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        if os.path.islink(path) and arcname is None:
            target = os.readlink(path)
            files[arc] = ("link", target)
            add_file(os.path.join(os.path.dirname(path), target) if not target.startswith("/") else target)
            return
        with open(path, "rb") as f:
            files[arc] = ("file", f.read(), os.stat(path).st_mode & 0o777)

    exe = os.path.realpath(sys.executable)
    add_file(exe, exe)
    binaries = [exe]
    stdlib = sysconfig.get_paths()["stdlib"]
    platstdlib = sysconfig.get_paths()["platstdlib"]
    for root in {stdlib, platstdlib}:
        for d, subdirs, names in os.walk(root):
            subdirs[:] = [s for s in subdirs if s not in PYTHON_SKIP and not s.startswith("config-")]
            for n in names:
                p = os.path.join(d, n)
                if n.endswith((".py", ".so")) and os.path.isfile(p):
                    add_file(os.path.realpath(p), p)
                    if n.endswith(".so"):
                        binaries.append(p)
    # Shared libraries, with the links they are found by (the interpreter's path included).
    seen = set()
    while binaries:
        b = binaries.pop()
        for lib in _ldd(b):
            if lib not in seen:
                seen.add(lib)
                add_file(lib)
                real = os.path.realpath(lib)
                if real != lib:
                    add_file(real, real)
    sitedir = "/opt/sdk"
    for mod in ("boto3", "botocore", "jmespath", "dateutil", "urllib3", "s3transfer", "six"):
        m = importlib.import_module(mod)
        path = m.__file__
        if os.path.basename(path) == "__init__.py":
            top = os.path.dirname(path)
            for d, subdirs, names in os.walk(top):
                rel = os.path.relpath(d, top)
                if mod == "botocore" and rel == "data":
                    subdirs[:] = [s for s in subdirs if s in botocore_services]
                subdirs[:] = [s for s in subdirs if s != "__pycache__"]
                for n in names:
                    if n.endswith((".py", ".json", ".json.gz", ".pem")):
                        add_file(os.path.join(d, n), os.path.join(sitedir, mod, rel, n))
        else:
            add_file(path, os.path.join(sitedir, os.path.basename(path)))
    entries = [(d + "/", b"", 0o755, tarfile.DIRTYPE, "") for d in sorted(dirs) if d not in ("bin", "etc", "tmp")]
    for arc, v in sorted(files.items()):
        if v[0] == "link":
            entries.append((arc, b"", 0o777, tarfile.SYMTYPE, v[1]))
        else:
            entries.append((arc, v[1], v[2] | 0o444))
    env = [f"PYTHONPATH={sitedir}", "PYTHONDONTWRITEBYTECODE=1", f"PATH=/bin:{os.path.dirname(exe)}"]
    return entries, env, exe


def python_image(registry, repo="python", tag="latest"):
    """busybox plus the host's Python and boto3 (`python_entries`); returns (image URI, python path)."""
    entries, env, exe = python_entries()
    layers = [tar_layer(busybox_entries()), tar_layer(entries)]
    registry.push_image(repo, tag, layers, cmd=["sh"], env=env)
    return f"{registry.host}/{repo}:{tag}", exe
