"""Loopback migrations over the cover transport (issue 14): every role an agent process on its
own 127.0.0.x address, each agent running its cover mux, every hop a stream inside the cover
records. The VM arrives bit-identical, also with n - k intermediates SIGKILLed mid-transfer, and
while it moves no role listens on or connects to a TCP port of its own: every TCP connection
between the agents' addresses is a cover link (port 8443) or the VM's service (7000)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from experiments.loopback import LoopbackBed
from hosts.protocol.cover import COVER_PORT, CoverSettings
from hosts.protocol.mgmt import MgmtError
from hosts.vm import ask_service

from .conftest import NET, SOURCE_IP, seven_agents
from .test_migration import _assert_migrated

DEST = "h6"
RATE = 1.5e6  # cover bytes/s per VM, summed over its 6 peers
COVER = {"kind": "cover"}
ALLOWED_PORTS = {COVER_PORT, 7000}  # the cover links, the VM's service


@pytest.fixture()
def bed(tmp_path) -> Iterator[LoopbackBed]:
    """As the loopback ``bed``, but h1's VM dirties 25 pages/s (100 kB/s), less than the cover
    gives the migration, so pre-copy converges as it would on a VM sized for the cover rate."""
    yield from seven_agents(tmp_path, 25)


def _settings(seed: int) -> CoverSettings:
    # a short stream timeout: a stream to a killed intermediate ends in seconds, not 20
    return CoverSettings(RATE, seed=seed, stream_timeout_s=3.0)


def _tcp_sockets() -> list[tuple[str, int, str, int, str]]:
    """(local ip, port, remote ip, port, state) of this namespace's IPv4 TCP sockets."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, remote, state = line.split()[1:4]
            (lip, lport), (rip, rport) = (
                (socket.inet_ntoa(struct.pack("<I", int(a, 16))), int(p, 16))
                for a, p in (x.split(":") for x in (local, remote)))
            out.append((lip, lport, rip, rport, state))
    return out


class WireWatch:
    """Samples the TCP sockets of the bed's addresses while a migration runs (sockets already
    there when the watch starts, e.g. an earlier test's connections in TIME_WAIT, are not its)."""

    def __init__(self) -> None:
        self.bad: set[tuple[str, int, str, int, str]] = set()
        self.before: set[tuple[str, int, str, int]] = set()
        self.cover_links = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples += 1
            for s in _tcp_sockets():
                lip, lport, rip, rport, state = s
                if not lip.startswith(NET) or s[:4] in self.before:
                    continue
                if state == "0A":  # LISTEN
                    if lport not in ALLOWED_PORTS:
                        self.bad.add(s)
                elif rip.startswith(NET):
                    if lport == COVER_PORT or rport == COVER_PORT:
                        self.cover_links += 1
                    elif lport not in ALLOWED_PORTS and rport not in ALLOWED_PORTS:
                        self.bad.add(s)

    def __enter__(self) -> WireWatch:
        self.before = {s[:4] for s in _tcp_sockets()}
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(2)


def _report(what: str, res: Any) -> None:
    src = res.role_stats["source:h1"]
    moved = 4096 * sum(src.get("pages_per_round") or [0])  # every pre-copy round's pages
    goodput = moved / res.migration_time_s
    print(f"\n{what}: {res.vm_bytes >> 20} MiB VM, {moved / 1e6:.1f} MB of pages in "
          f"{res.migration_time_s:.2f} s ({src.get('rounds')} rounds), goodput "
          f"{goodput / 1e6:.2f} MB/s = {goodput / RATE:.2f} x the cover rate {RATE / 1e6:.2f} "
          f"MB/s per VM; decision->first byte {src.get('decision_to_first_byte_s', -1):.3f} s; "
          f"downtime {res.downtime_s:.2f} s; floor {moved / RATE:.2f} s, "
          f"{res.migration_time_s / (moved / RATE):.2f} x it; rounds end at "
          f"{src.get('round_end_s')} s, drained {src.get('drain_s', 0):.2f} s")


@pytest.mark.timeout(300)
def test_a_cover_migration_arrives_bit_identical(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    bed.start_cover(_settings(seed=1))
    stats = bed.cover_stats()
    assert set(stats) == set(bed.registered) and all(stats.values())
    plan = bed.plan("mc-1", "stealth", "h1", DEST, ["h2", "h3", "h4"], "h5", k=2,
                    chunk_policy=COVER, transport="cover")
    with WireWatch() as wire:
        res = bed.migrate(plan, timeout_s=240)
    _report("cover migration", res)
    _assert_migrated(bed, res, before)
    src = res.role_stats["source:h1"]
    assert src["transport"] == "cover" and src["chunk_policy"]["kind"] == "cover"
    assert src["decision_to_first_byte_s"] < 0.5 + 2.0  # item 5 (loose: 2 cores, 7 muxes)
    assert src["drain_s"] > 0  # each round's acks awaited before the VM may pause
    # ... up to the destination: nothing of the pre-copy is left on any hop when the VM pauses,
    # as the destination saw it (one clock: agents on one machine)
    dst = res.role_stats[f"destination:{DEST}"]
    assert dst["last_round_in_at"] <= dst["resumed_at"] - dst["downtime_s"]
    for hop in ("h1->h2", "h1->h3", "h1->h4", "h2->h5", "h3->h5", "h4->h5", "h5->h6"):
        assert res.bytes_per_hop[hop] > 0, hop
    assert wire.samples > 5 and wire.cover_links > 0
    assert not wire.bad, f"TCP sockets of the roles themselves: {sorted(wire.bad)[:10]}"
    after = bed.cover_stats()
    assert all(after.values())  # the muxes still run after the migration


@pytest.mark.timeout(300)
def test_a_cover_migration_survives_n_minus_k_intermediates_killed(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    bed.start_cover(_settings(seed=2))
    plan = bed.plan("mc-nk", "stealth", "h1", DEST, ["h2", "h3", "h4", "h7"], "h5", k=2,
                    chunk_policy=COVER, transport="cover")
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(res=bed.migrate(plan, timeout_s=240)))
    t.start()
    deadline = time.monotonic() + 120
    relayed = 0
    while time.monotonic() < deadline and t.is_alive():
        try:
            relayed = bed.status("h3", migration="mc-nk")["stats"].get("chunks", 0)
        except MgmtError:
            pass
        if relayed >= 3:
            break
        time.sleep(0.05)
    assert relayed >= 3, "h3 relayed no chunks before the deadline"
    bed.kill("h3")  # SIGKILL, mid-transfer: its cover mux dies with it
    bed.kill("h7")
    t.join(240)
    res = out["res"]
    _report("cover migration, 2 of 4 intermediates killed", res)
    _assert_migrated(bed, res, before)
    assert sorted(res.failed_intermediates) == ["h3", "h7"]
    assert res.role_stats["source:h1"]["transport"] == "cover"
