#!/usr/bin/env bash
# One idempotent set-up step for stealth-mtd, used by `make setup`, the README commands,
# .ci/run and the Dockerfile. Installs the Debian packages, builds .venv on Debian's Python
# (Mininet's module lives there), installs the project, and makes sure Open vSwitch runs.
# A second run only checks, and takes seconds.
#
# STEALTH_MTD_SETUP_BUILD=1 (used by the Dockerfile's build step, which runs without privileges):
# install the packages and the venv only; skip the network-namespace probe and the start of Open
# vSwitch, which need the privileged run. `make test` in the running container does them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3
APT_PACKAGES=(mininet openvswitch-switch openvswitch-common tcpdump iperf3 ethtool iputils-ping
              iproute2 procps psmisc python3-venv python3-pip python3-dev gcc openssl iptables
              qemu-system-x86 busybox-static linux-image-amd64)  # the last three: the QEMU guest

say()  { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- root -------------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    fail "needs root (it installs Debian packages and starts Open vSwitch). Run: sudo make setup"
fi

# --- Debian packages ------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || fail "missing packages ${missing[*]} and no apt-get: install them by hand (Debian 12 / Ubuntu names)"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || fail "apt-get update failed: check the package mirror in /etc/apt/sources.list"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || fail "apt-get install ${missing[*]} failed: run it by hand to see why"
else
    say "Debian packages present"
fi
[ -x "$PY" ] || fail "$PY not found: install python3 (Debian's, it carries Mininet's module)"
"$PY" -c 'import mininet.net' 2>/dev/null || fail "Debian's python3 cannot import mininet: reinstall the 'mininet' package"

# --- network namespaces ------------------------------------------------------------------------
BUILD_ONLY="${STEALTH_MTD_SETUP_BUILD:-0}"
if [ "$BUILD_ONLY" = 1 ]; then
    say "build mode (STEALTH_MTD_SETUP_BUILD=1): no namespace probe, no Open vSwitch start"
else
    if ! ip netns add stealth-mtd-probe 2>/dev/null; then
        fail "cannot create a network namespace: Mininet needs them. In a container, run it with --privileged"
    fi
    ip netns del stealth-mtd-probe
fi

# --- venv ----------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating $VENV on $PY (--system-site-packages)"
    rm -rf "$VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi
STAMP="$VENV/.stealth-mtd-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || ! "$VENV/bin/python" -c 'import os_ken, scapy, cryptography, experiments' 2>/dev/null; then
    say "installing the project into $VENV (pip install -e '.[dev]')"
    LOG="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install -e "$ROOT[dev]" >"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        fail "pip install failed (whole log in $LOG): check that PyPI is reachable"
    fi
    echo "$WANT" > "$STAMP"
else
    say "venv up to date"
fi

# --- the QEMU guest ([vm] kind = "qemu"): Debian's kernel + a busybox initramfs, cached --------
if GUEST="$("$VENV/bin/python" -m hosts.qemu_guest 2>&1)"; then
    say "QEMU guest ready (cached under $ROOT/.cache/guest/)"
else
    fail "building the QEMU guest failed: $GUEST"
fi

# --- Open vSwitch ----------------------------------------------------------------------------
if [ "$BUILD_ONLY" = 1 ]; then
    say "installed: $VENV/bin/stealth-mtd (Open vSwitch starts on the first privileged run)"
    exit 0
fi
"$VENV/bin/python" -m topologies.ovs ensure || fail "Open vSwitch did not start: see the message above"
say "ready: $VENV/bin/stealth-mtd"
