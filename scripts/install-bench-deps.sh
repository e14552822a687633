#!/usr/bin/env bash
# Installs the peers and tools `cargo xtask bench` measures against, skipping what is there:
# - bench api: wrk, and moto's server (pip); fakecloud is optional (`cargo install fakecloud`);
# - bench run and bench registry: umoci, besides docker.io, podman, runc, skopeo and
#   docker-registry, which the tests need too (install-test-deps.sh, run first).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh

apt_pkgs=()
command -v wrk >/dev/null || apt_pkgs+=(wrk)
command -v umoci >/dev/null || apt_pkgs+=(umoci)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${apt_pkgs[*]} (run as root, or install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
if ! command -v moto_server >/dev/null; then
    python3 -m pip install -q 'moto[server]' 2>/dev/null \
        || python3 -m pip install -q --break-system-packages 'moto[server]'
fi
