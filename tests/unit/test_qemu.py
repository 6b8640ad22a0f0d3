"""The QEMU guest for real: built from Debian packages, booted (KVM or TCG), its counter asked,
live-migrated by QEMU through a pipe the test reads (slowly: QEMU waits), cancelled, loaded
from a truncated stream. Skips, saying why, where QEMU or the guest's packages are missing."""

from __future__ import annotations

import os
import time

import pytest

from hosts import qemu, qemu_guest
from hosts.vm import ask_service

WHY = qemu.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"QEMU guest cannot run here: {WHY}")


def _ask(port: int) -> dict:
    return ask_service("127.0.0.1", port, timeout=10.0)


def test_guest_build_is_cached_and_from_the_kernel_package() -> None:
    g = qemu_guest.build()
    t0 = time.monotonic()
    again = qemu_guest.build()
    assert again == g and time.monotonic() - t0 < 2.0  # a cache hit only hashes the inputs
    assert g.version == qemu_guest.kernel_version()
    with open(f"/boot/vmlinuz-{g.version}", "rb") as a, open(g.kernel, "rb") as b:
        assert a.read() == b.read()
    assert os.path.getsize(g.initrd) > 500_000  # busybox and e1000.ko are in it


def test_cpio_entries_are_aligned() -> None:
    blob = qemu_guest._cpio([("a", 0o100644, b"xyz"), ("d", 0o040755, b"")])
    assert blob.startswith(b"070701") and len(blob) % 4 == 0
    assert b"TRAILER!!!" in blob


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("qemu")
    os.chmod(d, 0o700)
    vm = qemu.QemuVM("g1", str(d), port=qemu_free_port(), tag="src", dirty_kib=256)
    vm.start(timeout=120)
    yield vm
    vm.destroy()


def qemu_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_counter_counts_and_qmp_errors_are_clear(guest: qemu.QemuVM) -> None:
    a, b = _ask(guest.port), _ask(guest.port)
    assert b["counter"] == a["counter"] + 1 and a["kind"] == "qemu" and a["vm"] == "g1"
    assert guest.status() == "running" and not guest.paused
    with pytest.raises(qemu.QemuError, match="no-such-command"):
        assert guest.qmp is not None
        guest.qmp.execute("no-such-command")


def test_cancelled_migration_leaves_the_guest_running(guest: qemu.QemuVM) -> None:
    before = _ask(guest.port)
    stats: dict = {}
    it = guest.migrate_out(stats)
    next(it)  # QEMU is streaming; the pipe is full and QEMU waits for us
    guest.cancel_out()
    with pytest.raises(qemu.QemuError):
        for _ in it:
            pass
    assert guest.status() == "running"
    after = _ask(guest.port)
    assert after["counter"] == before["counter"] + 1 and after["boot_id"] == before["boot_id"]


def test_precopy_out_of_rounds_is_forced_to_stop(guest: qemu.QemuVM) -> None:
    """As the model does at max_rounds: QEMU's downtime limit goes up, the guest stops."""
    before = _ask(guest.port)
    stats: dict = {}
    for _ in guest.migrate_out(stats, downtime_ms=1, max_rounds=1):
        time.sleep(0.01)  # ~25 MB/s: a 1 ms downtime limit alone would never be met
    assert stats["forced"] is True and stats["qemu"]["status"] == "completed"
    assert guest.status() == "postmigrate"
    guest.resume()  # nobody took the stream: run the guest here again
    after = _ask(guest.port)
    assert after["counter"] == before["counter"] + 1 and after["boot_id"] == before["boot_id"]


def test_live_migration_keeps_the_counter(guest: qemu.QemuVM, tmp_path) -> None:
    before = _ask(guest.port)
    dst = qemu.QemuVM("g1", guest.workdir, port=qemu_free_port(), tag="dst")
    bad = qemu.QemuVM("g1", guest.workdir, port=qemu_free_port(), tag="bad")
    dst.start(incoming=True)
    bad.start(incoming=True)
    try:
        assert dst.status() == "inmigrate"
        stats: dict = {}
        path = tmp_path / "stream"
        t0 = time.monotonic()
        with open(path, "wb") as f:
            for i, data in enumerate(guest.migrate_out(stats)):
                f.write(data)
                if i < 20:
                    time.sleep(0.02)  # a slow network: QEMU waits on the pipe
        assert time.monotonic() - t0 > 0.4
        assert guest.status() == "postmigrate"  # stopped at the source, not gone
        fig = stats["qemu"]
        assert fig["status"] == "completed" and fig["downtime_ms"] >= 0
        assert stats["stream_bytes"] == path.stat().st_size > 1_000_000
        assert stats["rounds"] >= 2 and stats["paused_at"] > 0
        # a truncated stream is refused, the waiting QEMU does not run a half guest
        trunc = tmp_path / "trunc"
        trunc.write_bytes(path.read_bytes()[: stats["stream_bytes"] // 2])
        with pytest.raises(qemu.QemuError):
            bad.migrate_in(str(trunc), timeout=30)
        got = dst.migrate_in(str(path))
        assert got["resumed_at"] >= stats["paused_at"]
        after = _ask(dst.port)
        assert after["boot_id"] == before["boot_id"]  # the same boot: no restart
        assert after["counter"] == before["counter"] + 1
        assert after["ticks"] > before["ticks"]
    finally:
        dst.destroy()
        bad.destroy()

