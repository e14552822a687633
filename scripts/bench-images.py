#!/usr/bin/env python3
"""Builds the images `cargo xtask bench run` uses and pushes them to a registry on loopback.

- `bench/busybox:latest`: Debian's busybox-static as one layer (the tests' image); its root
  filesystem is also written as `<out>/rootfs.tar` for `docker import` and `podman import`,
  so every peer starts the same files.
- `bench/big:latest`: 5 gzip layers of 40 MB each (uncompressed): per layer 10 files of 3 MB
  and 2,560 files of 4 KiB in 64 directories, of random bytes (so compression does not shrink
  the transfer away).

Usage: bench-images.py <registry host:port> <out dir> [--no-big]. Prints a JSON summary.
"""

import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import images  # noqa: E402


def big_layer(i):
    entries = [(f"layer{i}/", b"", 0o755, tarfile.DIRTYPE, "")]
    for f in range(10):
        entries.append((f"layer{i}/big-{f}.bin", os.urandom(3 << 20), 0o644))
    for d in range(64):
        entries.append((f"layer{i}/d{d}/", b"", 0o755, tarfile.DIRTYPE, ""))
        for f in range(40):
            entries.append((f"layer{i}/d{d}/f{f}", os.urandom(4096), 0o644))
    return images.tar_layer(entries, "gzip")


def main():
    host, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    reg = images.Registry(f"http://{host}")
    busybox = images.busybox_image(reg, repo="bench/busybox", cmd=["sleep", "600"])
    blob, _, _ = images.tar_layer(images.busybox_entries(), compress=None)
    with open(os.path.join(out, "rootfs.tar"), "wb") as f:
        f.write(blob)
    summary = {"busybox": busybox}
    if "--no-big" not in sys.argv[3:]:
        layers = [big_layer(i) for i in range(5)]
        reg.push_image("bench/big", "latest", layers, cmd=["sh"])
        summary.update(big=f"{host}/bench/big:latest", big_compressed_bytes=sum(len(b) for b, _, _ in layers))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
