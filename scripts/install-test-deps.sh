#!/usr/bin/env bash
# Installs what estiba's tests need on a Debian machine, skipping what is already there:
# the AWS CLI (Debian's awscli), container tools (busybox, runc, docker.io, podman, skopeo),
# the browser the console's tests drive (chromium), protoc and etcd (the etcd store), g++ (for
# libFuzzer) and the Python packages of tests/e2e/requirements.txt (playwright among them).
# Run as root (CI is root); otherwise it prints what is missing and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=()
[ -x /usr/bin/aws ] || apt_pkgs+=(awscli)
command -v python3 >/dev/null || apt_pkgs+=(python3 python3-pip)
# Container tests: test images are built from busybox-static and served by Debian's
# reference registry; runc is the second executor they run on.
[ -x /bin/busybox ] || apt_pkgs+=(busybox-static)
command -v docker-registry >/dev/null || apt_pkgs+=(docker-registry)
command -v runc >/dev/null || apt_pkgs+=(runc)
command -v zstd >/dev/null || apt_pkgs+=(zstd)
command -v ip >/dev/null || apt_pkgs+=(iproute2)
command -v unshare >/dev/null || apt_pkgs+=(util-linux)
command -v ps >/dev/null || apt_pkgs+=(procps)
# Registry tests push and pull with the real clients.
command -v skopeo >/dev/null || apt_pkgs+=(skopeo)
command -v podman >/dev/null || apt_pkgs+=(podman)
command -v dockerd >/dev/null || apt_pkgs+=(docker.io)
# The console's tests (tests/e2e/test_console.py) drive Debian's headless chromium through
# Playwright (executable_path=/usr/bin/chromium); Playwright's own browser download is never used.
[ -x /usr/bin/chromium ] || apt_pkgs+=(chromium)
# The etcd store: its client's build script compiles etcd's protobufs with protoc (and the
# well-known types of libprotobuf-dev); its tests start a real etcd.
command -v protoc >/dev/null || apt_pkgs+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || apt_pkgs+=(libprotobuf-dev)
command -v etcd >/dev/null || apt_pkgs+=(etcd-server)
# The HTTPS tests (tests/e2e/test_agent_tls.py) make their CA and certificates with openssl.
command -v openssl >/dev/null || apt_pkgs+=(openssl)
# The fuzz targets (`cargo xtask fuzz`): libfuzzer-sys compiles libFuzzer, which is C++.
command -v c++ >/dev/null || apt_pkgs+=(g++)


if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${apt_pkgs[*]} (run as root, or install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# Always: the versions are pinned, and pip does nothing when they are already there.
python3 -m pip install -q -r tests/e2e/requirements.txt 2>/dev/null \
    || python3 -m pip install -q --break-system-packages -r tests/e2e/requirements.txt
