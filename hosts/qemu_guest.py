"""The QEMU guest, built on this machine from Debian packages only (no image download).

The guest is Debian's kernel (``linux-image-amd64``: its ``/boot/vmlinuz-VERSION``, never the
host's running kernel) and an initramfs made here: ``busybox`` from ``busybox-static``, the
kernel's own ``e1000.ko`` (QEMU's NIC) and an ``/init`` that brings up the NIC behind QEMU's user
networking (10.0.2.15) and serves the counter on TCP port ``GUEST_PORT``: every connection gets
one JSON line ``{"vm": NAME, "counter": N, "ticks": T, "boot_id": B, "kind": "qemu"}``. The
counter lives in the guest's RAM (a tmpfs), so it survives a live migration and only a reboot
resets it; ``boot_id`` (the kernel's random boot id) proves there was none. A small loop dirties
``dirty_kib`` KiB of guest memory ten times a second (kernel argument ``stealth.dirty_kib``), so
QEMU's pre-copy has pages to chase.

``build()`` caches the pair under ``cache_dir()`` (``$STEALTH_MTD_GUEST_CACHE``, else the
checkout's ``.cache/guest/``), keyed by a hash of the kernel, busybox and the init script: the
first build takes about a second, later calls only check. ``python -m hosts.qemu_guest`` builds
(used by ``scripts/setup.sh``) and prints the paths.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

GUEST_PORT = 7000  # the counter's port inside the guest
UP_MARK = "stealth-guest: up"  # what init prints on the console once the counter serves
BUSYBOX = "/bin/busybox"
KERNEL_PACKAGE = "linux-image-amd64"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs -o size=48m run /run
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1"=*) echo "${a#*=}";; esac; done; }
NAME=$(arg stealth.vm); [ -n "$NAME" ] || NAME=vm
DIRTY=$(arg stealth.dirty_kib); [ -n "$DIRTY" ] || DIRTY=0
insmod /lib/e1000.ko
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo 0 > /run/counter
echo "$NAME" > /run/name
cat /proc/sys/kernel/random/boot_id > /run/boot_id
if [ "$DIRTY" -gt 0 ]; then
  ( while :; do dd if=/dev/urandom of=/run/dirt bs=1024 count="$DIRTY" conv=notrunc 2>/dev/null
      usleep 100000; done ) &
fi
nc -ll -p __PORT__ -e /bin/counter &
i=0; while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do
  usleep 100000; i=$((i + 1)); done
ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1  # QEMU's user network learns the guest's MAC
echo "__UP_MARK__ name=$NAME port=__PORT__"
while :; do sleep 3600; done
"""

COUNTER = r"""#!/bin/busybox sh
while ! mkdir /run/lock 2>/dev/null; do usleep 1000; done
n=$(cat /run/counter); n=$((n + 1)); echo "$n" > /run/counter
rmdir /run/lock
read up idle < /proc/uptime
t=${up%.*}${up#*.}
printf '{"vm": "%s", "counter": %d, "ticks": %d, "boot_id": "%s", "kind": "qemu"}\n' \
  "$(cat /run/name)" "$n" "$((10#$t))" "$(cat /run/boot_id)"
"""


class GuestError(RuntimeError):
    """The guest cannot be built here (a package missing); the message says which."""


@dataclass(frozen=True)
class Guest:
    """A built guest: the kernel and initramfs QEMU boots (``-kernel``/``-initrd``)."""

    kernel: str
    initrd: str
    version: str  # the kernel's

    def append(self, name: str, dirty_kib: int = 0) -> str:
        """The kernel command line for VM ``name``."""
        return f"console=ttyS0 quiet panic=-1 stealth.vm={name} stealth.dirty_kib={dirty_kib}"


def cache_dir() -> Path:
    env = os.environ.get("STEALTH_MTD_GUEST_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".cache" / "guest"


def kernel_version() -> str:
    """The version of the kernel Debian's ``linux-image-amd64`` installed (not ``uname -r``)."""
    try:
        dep = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", KERNEL_PACKAGE],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise GuestError(f"Debian package {KERNEL_PACKAGE} is not installed: run "
                         "scripts/setup.sh (it installs it)") from None
    for part in dep.split(","):
        name = part.strip().split(" ")[0]
        if name.startswith("linux-image-") and name != KERNEL_PACKAGE:
            return name[len("linux-image-"):]
    raise GuestError(f"{KERNEL_PACKAGE} depends on no linux-image-VERSION: {dep!r}")


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of (path, mode, data) entries (directories: mode 0o040755,
    symbolic links 0o120777 with the target as data)."""
    out = io.BytesIO()
    for ino, (path, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        name = path.encode() + b"\0"
        nlink = 2 if mode & 0o040000 else 1
        fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name)
        out.write(b"\0" * (-(110 + len(name)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def build(force: bool = False) -> Guest:
    """The cached guest, built first if missing (or ``force``)."""
    version = kernel_version()
    vmlinuz = Path(f"/boot/vmlinuz-{version}")
    e1000 = Path(f"/lib/modules/{version}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko")
    for p, pkg in ((vmlinuz, f"linux-image-{version}"), (e1000, f"linux-image-{version}"),
                   (Path(BUSYBOX), "busybox-static")):
        if not p.is_file():
            raise GuestError(f"{p} missing: install Debian package {pkg} (scripts/setup.sh)")
    if b"ld-linux" in Path(BUSYBOX).read_bytes()[:8192]:  # a dynamic one has an interpreter
        raise GuestError(f"{BUSYBOX} is not statically linked: install busybox-static")
    init = INIT.replace("__PORT__", str(GUEST_PORT)).replace("__UP_MARK__", UP_MARK).encode()
    counter = COUNTER.encode()
    h = hashlib.sha256()
    for blob in (vmlinuz.read_bytes(), e1000.read_bytes(), Path(BUSYBOX).read_bytes(), init,
                 counter):
        h.update(hashlib.sha256(blob).digest())
    key = h.hexdigest()[:16]
    d = cache_dir() / f"{version}-{key}"
    guest = Guest(str(d / "vmlinuz"), str(d / "initrd.gz"), version)
    if not force and (d / "ok").is_file():
        return guest
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    dirs = ["bin", "dev", "proc", "sys", "run", "tmp", "lib"]
    entries = [(x, 0o040755, b"") for x in dirs]
    entries += [("init", 0o100755, init), ("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()),
                ("bin/sh", 0o120777, b"busybox"),
                ("bin/counter", 0o100755, counter), ("lib/e1000.ko", 0o100644, e1000.read_bytes())]
    tmp = d / "initrd.gz.tmp"
    tmp.write_bytes(gzip.compress(_cpio(entries), compresslevel=6, mtime=0))
    tmp.replace(guest.initrd)
    shutil.copyfile(vmlinuz, d / "vmlinuz.tmp")
    (d / "vmlinuz.tmp").replace(guest.kernel)
    (d / "ok").write_text(json.dumps({"kernel": str(vmlinuz), "busybox": BUSYBOX}) + "\n")
    return guest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        g = build(force="--force" in args)
    except GuestError as exc:
        print(f"qemu_guest: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"kernel": g.kernel, "initrd": g.initrd, "version": g.version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
