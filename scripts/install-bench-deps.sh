#!/usr/bin/env bash
# Installs the peers and tools `cargo xtask bench` measures against, skipping what is there:
# - bench api: wrk, and moto's server (pip, into the venv target/bench-venv: never next to
#   Debian's awscli, whose pyOpenSSL breaks on the newer cryptography moto pulls in);
#   fakecloud is optional (`cargo install fakecloud`);
# - bench dns: dnsperf (the load generator) and dnsmasq (the peer);
# - bench lb: haproxy and nginx (nginx-light: the backend and a peer), wrk;
# - bench run and bench registry: umoci, besides docker.io, podman, runc, skopeo and
#   docker-registry, which the tests need too (install-test-deps.sh, run first).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh

apt_pkgs=()
command -v wrk >/dev/null || apt_pkgs+=(wrk)
command -v umoci >/dev/null || apt_pkgs+=(umoci)
command -v dnsperf >/dev/null || apt_pkgs+=(dnsperf)
command -v dnsmasq >/dev/null || apt_pkgs+=(dnsmasq-base)
command -v haproxy >/dev/null || apt_pkgs+=(haproxy)
command -v nginx >/dev/null || apt_pkgs+=(nginx-light)
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_pkgs+=(python3-venv)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${apt_pkgs[*]} (run as root, or install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/moto_server" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]'
fi
