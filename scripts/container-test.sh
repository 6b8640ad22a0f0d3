#!/usr/bin/env bash
# `sudo make container-test`: the Dockerfile, built and run for real on a machine without a
# Docker engine or an image registry, the way CI runs it (`docker run --privileged`):
#
#   1. base image: `debootstrap --variant=minbase bookworm` (cached in $CACHE/rootfs-bookworm),
#      imported with `podman import` as localhost/stealth-mtd-base:bookworm (kept for next time);
#   2. build: `buildah bud --isolation chroot` of ./Dockerfile on a snapshot of the working tree
#      (or of git HEAD with --head), FROM that base (build arg BASE);
#   3. run: the image's test command (`make test`) in a container made of the image's filesystem
#      (`buildah mount`) with its own mount, PID and network namespaces and pivot_root, every
#      capability and writable /sys and /proc/sys, i.e. what `docker run --privileged` gives,
#      while holding the machine-wide testbed lock;
#   4. clean up: the container's Open vSwitch is stopped, the namespaces end with the run, the
#      container and the test image are deleted. Kept: the cached rootfs and base image.
#
# Why not `buildah run --isolation chroot` for step 3 (it is what builds the image in step 2):
# chroot isolation leaves the mount namespace's root at the host's /, and Mininet runs every
# `host.popen()` through `mnexec -a PID`, which setns()es into that mount namespace and so lands
# in the host's filesystem ("/opt/stealth-mtd: No such file or directory"); it also shares the
# host's network and PID namespaces. Podman and `buildah run --isolation oci` do not start here
# (crun: setrlimit refused, no cgroup manager). util-linux `unshare` + `pivot_root` give the same
# kind of container docker does, with nothing more than what this script already needs.
#
# Machine-wide lock: a testbed on the host takes /run/lock/stealth-mtd-testbed.lock
# (experiments/testbed.py) for the life of each network; the container has its own /run and
# cannot see it. This script holds it from before the container starts until everything the
# run made is gone, so the container's suite never runs beside a host testbed. The container's
# Open vSwitch has its own /var/run/openvswitch, conf.db and network namespace (userspace
# datapath, STEALTH_MTD_DATAPATH=user); the host's OVS daemons are checked untouched afterwards.
# It never runs `mn -c` or `stealth-mtd clean` on the host.
#
# Options:
#   --head            build from `git HEAD` instead of the working tree (tracked + untracked files)
#   --ca-bundle FILE  a PEM bundle pip in the build should trust (networks that intercept TLS);
#                     default: the host pip's own setting (PIP_CERT or `pip config` global.cert),
#                     if any. --no-ca-bundle: pass none.
#   --keep-image      keep the test image localhost/stealth-mtd:container-test afterwards
#   --rebuild-base    debootstrap and import the base again instead of using the cache
# Environment: PYTEST_ARGS (default "-p no:cacheprovider"), STEALTH_MTD_CONTAINER_CACHE
# (default /var/tmp/stealth-mtd-container), STEALTH_MTD_DEBIAN_MIRROR, STEALTH_MTD_LOCK_WAIT
# (seconds to wait for the testbed lock, default 3600), STEALTH_MTD_CONTAINER_TIMEOUT (seconds
# for the test run, default 3600).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STEALTH_MTD_CONTAINER_CACHE:-/var/tmp/stealth-mtd-container}"
MIRROR="${STEALTH_MTD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$CACHE/rootfs-bookworm"
BASE_IMAGE=localhost/stealth-mtd-base:bookworm
IMAGE=localhost/stealth-mtd:container-test
LOCK=/run/lock/stealth-mtd-testbed.lock
LOCK_WAIT="${STEALTH_MTD_LOCK_WAIT:-3600}"
RUN_TIMEOUT="${STEALTH_MTD_CONTAINER_TIMEOUT:-3600}"
PYTEST_ARGS="${PYTEST_ARGS:--p no:cacheprovider}"

FROM_HEAD=0 KEEP_IMAGE=0 REBUILD_BASE=0 CA_BUNDLE="" CA_MODE=auto
while [ $# -gt 0 ]; do
    case "$1" in
        --head) FROM_HEAD=1 ;;
        --keep-image) KEEP_IMAGE=1 ;;
        --rebuild-base) REBUILD_BASE=1 ;;
        --ca-bundle) CA_BUNDLE="${2:?--ca-bundle needs a file}"; CA_MODE=given; shift ;;
        --no-ca-bundle) CA_MODE=none ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say()  { printf '[container-test] %s\n' "$*"; }
fail() { printf '[container-test] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, buildah, Mininet): sudo make container-test"

# --- timings, printed at the end whatever happens ---------------------------------------------
declare -A T=()
ORDER=()
T0=$(date +%s)
phase_start() { PHASE="$1"; PHASE_T0=$(date +%s); ORDER+=("$1"); }
phase_end()   { T[$PHASE]=$(( $(date +%s) - PHASE_T0 )); }
fmt() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }
report_times() {
    local k
    say "timings:"
    for k in "${ORDER[@]}"; do
        printf '[container-test]   %-28s %s\n' "$k" "$([ -n "${T[$k]:-}" ] && fmt "${T[$k]}" || echo 'not finished')"
    done
    printf '[container-test]   %-28s %s\n' "total" "$(fmt $(( $(date +%s) - T0 )))"
}

# --- tools: installed here, so a fresh machine needs nothing by hand ----------------------------
need=()
command -v buildah >/dev/null     || need+=(buildah)
command -v podman >/dev/null      || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v flock >/dev/null       || need+=(util-linux)
command -v git >/dev/null         || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || fail "missing ${need[*]} and no apt-get: install them by hand"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
        || fail "apt-get install ${need[*]} failed: run it by hand to see why"
fi
mkdir -p "$CACHE/logs"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# --- state touched during the run, cleaned up by the EXIT trap -----------------------------------
CTX="" CTR="" MP="" NSFILE="" LOCKED=0 RC=1
HOST_OVS_BEFORE="" LINKS_BEFORE="" MOUNTS_BEFORE=""

links_now()  { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort; }
mounts_now() { awk '{print $2}' /proc/self/mounts | sort; }
host_ovs()   {
    local d f pid out=""
    for d in ovsdb-server ovs-vswitchd; do
        f=/var/run/openvswitch/$d.pid
        pid=$(cat "$f" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then out+="$d=$pid "; fi
    done
    printf '%s' "$out"
}

# pids still in one of the container's namespaces (recorded in $NSFILE by the container's init)
container_pids() {
    local p ns n
    [ -n "$NSFILE" ] && [ -s "$NSFILE" ] || return 0
    for p in /proc/[0-9]*; do
        for n in pid net mnt; do
            ns=$(readlink "$p/ns/$n" 2>/dev/null) || continue
            if grep -qxF "$ns" "$NSFILE"; then echo "${p#/proc/}"; break; fi
        done
    done
}

cleanup() {
    RC=${RC:-1}
    set +e
    if [ -n "$CTR" ]; then
        # 1. processes: the container's PID namespace ends with its init, so none should be left
        local left
        left=$(container_pids)
        if [ -n "$left" ]; then
            say "WARNING: killing processes still in the container's namespaces: $left"
            kill -KILL $left 2>/dev/null; sleep 0.5
            left=$(container_pids)
            [ -n "$left" ] && say "WARNING: still alive: $left"
        elif [ -s "$NSFILE" ]; then
            say "no process left in the container's namespaces ($(tr '\n' ' ' < "$NSFILE"))"
        fi
        # 2. the host's root network namespace and mount table: nothing new expected
        if [ -n "$LINKS_BEFORE" ]; then
            local new
            new=$(comm -13 <(echo "$LINKS_BEFORE") <(links_now) | tr '\n' ' ')
            [ -n "$new" ] && say "WARNING: interfaces appeared in the host's namespace during the run (not removed, another user may own them): $new"
        fi
        # 3. the container: unmount and delete
        buildah umount "$CTR" >/dev/null 2>&1
        buildah rm "$CTR" >/dev/null 2>&1 && say "removed container $CTR"
        if [ -n "$MOUNTS_BEFORE" ]; then
            local newm
            newm=$(comm -13 <(echo "$MOUNTS_BEFORE") <(mounts_now) | tr '\n' ' ')
            if [ -n "$newm" ]; then say "WARNING: mounts left on the host: $newm"
            else say "host mount table as before the run"; fi
        fi
    fi
    [ -n "$NSFILE" ] && rm -f "$NSFILE"
    if [ "$KEEP_IMAGE" = 0 ] && buildah images -q "$IMAGE" >/dev/null 2>&1; then
        buildah rmi "$IMAGE" >/dev/null 2>&1 && say "removed image $IMAGE (--keep-image keeps it)"
    fi
    [ -n "$CTX" ] && rm -rf "$CTX"
    if [ "$LOCKED" = 1 ]; then
        # 4. the host's Open vSwitch: same daemons as before the run, still answering
        local after
        after=$(host_ovs)
        if [ -z "$HOST_OVS_BEFORE" ]; then
            say "host Open vSwitch: was not running before the run${after:+, runs now: $after}"
        elif [ "$after" = "$HOST_OVS_BEFORE" ] && ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
            say "host Open vSwitch untouched: ${after}still running and answering"
        else
            say "WARNING: host Open vSwitch changed: before '$HOST_OVS_BEFORE', after '$after'"
        fi
        flock -u 9
        exec 9>&-
        say "released $LOCK"
    fi
    say "kept for next time: $ROOTFS (debootstrap) and image $BASE_IMAGE"
    report_times
    exit "$RC"
}
trap cleanup EXIT
trap 'RC=130; exit 130' INT TERM

# --- 1. base image -----------------------------------------------------------------------------
if [ "$REBUILD_BASE" = 1 ]; then
    buildah rmi "$BASE_IMAGE" >/dev/null 2>&1 || true
    rm -rf "$ROOTFS" "$ROOTFS.ok"
fi
if buildah images -q "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE: cached"
else
    if [ -f "$ROOTFS.ok" ] && [ -d "$ROOTFS" ]; then
        say "debootstrap: cached in $ROOTFS"
    else
        phase_start "debootstrap"
        say "debootstrap --variant=minbase bookworm $ROOTFS ($MIRROR; log in $CACHE/logs)"
        rm -rf "$ROOTFS" "$ROOTFS.tmp"
        debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" \
            > "$CACHE/logs/debootstrap-$STAMP.log" 2>&1 \
            || { tail -n 20 "$CACHE/logs/debootstrap-$STAMP.log" >&2; fail "debootstrap failed"; }
        mv "$ROOTFS.tmp" "$ROOTFS"
        touch "$ROOTFS.ok"
        phase_end
    fi
    phase_start "import base image"
    say "podman import $ROOTFS as $BASE_IMAGE"
    tar -C "$ROOTFS" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null \
        || fail "podman import failed"
    phase_end
fi

# --- 2. build context: a snapshot, so edits during the build do not matter ---------------------
CTX="$(mktemp -d "$CACHE/context.XXXXXX")"
if [ "$FROM_HEAD" = 1 ]; then
    git -C "$ROOT" archive HEAD | tar -x -C "$CTX"
    say "build context: git HEAD $(git -C "$ROOT" rev-parse --short HEAD)"
elif git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    # tracked and untracked files, not the ignored ones (.venv, caches, results): what a fresh
    # checkout with these edits would hold
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -c) | tar -x -C "$CTX"
    say "build context: working tree of $ROOT (git HEAD $(git -C "$ROOT" rev-parse --short HEAD) plus local changes)"
else
    tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./results -c . | tar -x -C "$CTX"
    say "build context: $ROOT"
fi

if [ "$CA_MODE" = auto ]; then
    CA_BUNDLE="${PIP_CERT:-}"
    if [ -z "$CA_BUNDLE" ] && command -v python3 >/dev/null; then
        CA_BUNDLE=$(python3 -m pip config list 2>/dev/null \
            | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | tail -n 1 || true)
    fi
    if [ -z "$CA_BUNDLE" ]; then  # no pip on the host's python3 (e.g. under sudo): its config files
        CA_BUNDLE=$(cat /etc/xdg/pip/pip.conf /etc/pip.conf 2>/dev/null \
            | sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' | tail -n 1 || true)
    fi
fi
if [ "$CA_MODE" != none ] && [ -n "$CA_BUNDLE" ]; then
    [ -r "$CA_BUNDLE" ] || fail "CA bundle $CA_BUNDLE not readable"
    install -D -m 0644 "$CA_BUNDLE" "$CTX/.container/ca-bundle.crt"
    say "pip in the build trusts $CA_BUNDLE ($([ "$CA_MODE" = given ] && echo --ca-bundle || echo "the host pip's setting"); --no-ca-bundle to leave it out)"
fi

# --- 3. build ------------------------------------------------------------------------------------
phase_start "build (make setup)"
BUILD_LOG="$CACHE/logs/build-$STAMP.log"
say "buildah bud --isolation chroot --build-arg BASE=$BASE_IMAGE -t $IMAGE (log: $BUILD_LOG)"
if ! buildah bud --isolation chroot --build-arg "BASE=$BASE_IMAGE" -t "$IMAGE" \
        -f "$CTX/Dockerfile" "$CTX" 2>&1 | tee "$BUILD_LOG" \
        | grep --line-buffered -E '^(STEP|\[setup\]|COMMIT|pip trusts|Error|error)'; then
    tail -n 30 "$BUILD_LOG" >&2
    fail "build failed (whole log: $BUILD_LOG)"
fi
phase_end
rm -rf "$CTX"; CTX=""

# --- 4. run the test command under the machine-wide testbed lock --------------------------------
exec 9>>"$LOCK"
if ! flock -n 9; then
    phase_start "wait for the testbed lock"
    say "another stealth-mtd network runs on this machine ($LOCK held); waiting up to ${LOCK_WAIT}s"
    flock -w "$LOCK_WAIT" 9 || fail "the testbed lock $LOCK stayed held for ${LOCK_WAIT}s"
    phase_end
fi
LOCKED=1
say "holding $LOCK"
HOST_OVS_BEFORE=$(host_ovs)
LINKS_BEFORE=$(links_now)
MOUNTS_BEFORE=$(mounts_now)

CTR=$(buildah from --name "stealth-mtd-ctest-$$" "$IMAGE")
MP=$(buildah mount "$CTR")
NSFILE="$CACHE/namespaces-$STAMP"
# the image's environment and working directory, as `docker run` would apply them
mapfile -t IMG_ENV < <(buildah inspect --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$CTR" | sed '/^$/d')
WORKDIR=$(buildah inspect --format '{{.OCIv1.Config.WorkingDir}}' "$CTR")

# The container's init: runs on the host's tools until pivot_root, then only the image's.
# /proc and /sys are mounted fresh (this PID and network namespace, writable: Mininet's hosts
# write sysctls), /dev is the host's (as with --privileged), /run and /dev/shm are the
# container's own tmpfs.
INIT='
set -e
R="$1" NSFILE="$2"; shift 2
readlink /proc/self/ns/pid /proc/self/ns/net /proc/self/ns/mnt > "$NSFILE"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mkdir -p "$R/run/lock"
ip link set lo up
cd "$R"
mkdir -p .pivot-old
pivot_root . .pivot-old
cd /
umount -l /.pivot-old
rmdir /.pivot-old
exec "$@"'

# The test command, then the container's Open vSwitch stopped (its bridges first): that is
# what ends its daemons cleanly before the namespaces go.
TEST_CMD='
make test PYTEST_ARGS="$PYTEST_ARGS"
rc=$?
if [ -S /var/run/openvswitch/db.sock ]; then
    for br in $(ovs-vsctl --timeout=5 list-br 2>/dev/null); do ovs-vsctl --timeout=5 --if-exists del-br "$br"; done
    /usr/share/openvswitch/scripts/ovs-ctl stop
fi
if pgrep -x ovs-vswitchd >/dev/null || pgrep -x ovsdb-server >/dev/null; then
    echo "[container] Open vSwitch still running: $(pgrep -a -x "ovs-vswitchd|ovsdb-server")"
else
    echo "[container] Open vSwitch stopped (no ovs-vswitchd, no ovsdb-server left)"
fi
exit $rc'

phase_start "test run (make test)"
TEST_LOG="$CACHE/logs/test-$STAMP.log"
say "running \`make test\` in $CTR (own mount/PID/network namespaces; PYTEST_ARGS='$PYTEST_ARGS'; log: $TEST_LOG)"
set +e
timeout -k 30 "$RUN_TIMEOUT" \
    unshare --mount --pid --net --uts --ipc --fork --kill-child --propagation private -- \
    /bin/bash -c "$INIT" container-init "$MP" "$NSFILE" \
    /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${IMG_ENV[@]}" HOME=/root STEALTH_MTD_DATAPATH=user "PYTEST_ARGS=$PYTEST_ARGS" \
    /bin/bash -c "cd '${WORKDIR:-/}' && $TEST_CMD" 2>&1 | tee "$TEST_LOG"
RC=${PIPESTATUS[0]}
set -e
phase_end
if [ "$RC" -eq 0 ]; then say "tests passed in the container"; else say "tests FAILED in the container (exit $RC)"; fi
exit "$RC"
