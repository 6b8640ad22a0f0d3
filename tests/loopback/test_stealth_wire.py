"""What crosses the wire: no hop carries the key, a share, the destination address or a VM page,
and receivers shrug off junk connections, unexpected senders and a forging intermediate."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import numpy as np

from experiments.loopback import LoopbackBed
from hosts.protocol.mgmt import MgmtError
from hosts.vm import PAGE, ask_service
from tests.recording import RecordingProxy, replay

from .conftest import HOSTS, SOURCE_IP, free_port


def pages_found(capture: bytes, image: bytes) -> int:
    """How many pages of ``image`` appear whole, at any alignment, in ``capture``."""
    pages = [image[i : i + PAGE] for i in range(0, len(image), PAGE)]
    heads = {int.from_bytes(p[:8], "little"): p for p in pages}
    keys = np.fromiter(heads, dtype=np.uint64)
    arr = np.frombuffer(capture, dtype=np.uint8)
    found = set()
    for off in range(8):
        n = (len(arr) - off) // 8
        words = arr[off : off + 8 * n].view("<u8")
        for j in np.nonzero(np.isin(words, keys))[0]:
            start = off + 8 * int(j)
            page = heads[int(words[j])]
            if capture[start : start + PAGE] == page:
                found.add(start)
    return len(found)


def test_page_finder_finds_pages_in_the_clear() -> None:
    image = os.urandom(8 * PAGE)
    capture = os.urandom(1001) + image[3 * PAGE : 5 * PAGE] + os.urandom(77)
    assert pages_found(capture, image) == 2
    assert pages_found(os.urandom(100000), image) == 0


def test_hops_carry_no_key_address_or_page(bed: LoopbackBed, tmp_path) -> None:
    keyfile = str(tmp_path / "key.json")
    plan = bed.plan(
        "m-wire",
        "stealth",
        "h1",
        "h6",
        ["h2", "h3", "h4"],
        "h5",
        k=2,
        faults={"h1": {"record_key": keyfile}},
        chunk_policy={"kind": "profile", "rate_budget_bps": 0, "max_size": 65536},
    )
    proxies: dict[str, RecordingProxy] = {}
    for ep in [*plan.intermediates, plan.leader]:
        assert ep is not None
        ep.listen_port = free_port(ep.ip)
        ep.port = free_port(ep.ip)
        proxies[ep.host] = RecordingProxy(ep.ip, ep.port, (ep.ip, ep.listen_port))
    plan.destination.port = free_port(plan.destination.ip)
    plan.dest_port = free_port(plan.destination.ip)
    proxies["h6"] = RecordingProxy(
        plan.destination.ip, plan.dest_port, (plan.destination.ip, plan.destination.port)
    )
    with open(os.path.join(bed.root, "h1", "vm1.mem"), "rb") as f:
        image = f.read()
    res = bed.migrate(plan)
    assert res.ok, res.reason
    assert ask_service(HOSTS["h6"], 7000)["vm"] == "vm1"
    with open(keyfile) as f:
        secret = json.load(f)
    key = bytes.fromhex(secret["key"])
    shares = [bytes.fromhex(s) for s in secret["shares"]]
    total = 0
    for host, proxy in proxies.items():
        cap = bytes(proxy.data)
        proxy.close()
        total += len(cap)
        assert len(cap) > 1000, host
        assert key not in cap and secret["key"].encode() not in cap, host
        for s in shares:
            assert s not in cap and s[:-1] not in cap, host
        assert HOSTS["h6"].encode() not in cap, host
        assert b"dest_address" not in cap and b'"vm1"' not in cap, host
        assert pages_found(cap, image) == 0, host
    assert total > 2 * len(image)  # the captures did see the whole migration


def _junk(ip: str, port: int, pubkey_hex: str) -> None:
    """Garbage, an unexpected sender, a claimed sender without its key, a truncated record."""
    attempts = [
        os.urandom(500),
        (64).to_bytes(4, "big") + os.urandom(64),
        (64).to_bytes(4, "big")
        + os.urandom(32)
        + bytes.fromhex(pubkey_hex)
        + (100).to_bytes(4, "big")
        + os.urandom(100),
        (64).to_bytes(4, "big")
        + os.urandom(32)
        + bytes.fromhex(pubkey_hex)
        + (5000).to_bytes(4, "big")
        + os.urandom(10),
    ]
    for data in attempts:
        try:
            with socket.create_connection((ip, port), timeout=2) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2)
                try:
                    s.recv(10)
                except OSError:
                    pass
        except OSError:
            pass


def test_receivers_survive_junk_and_a_forging_intermediate(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = bed.plan(
        "m-junk",
        "stealth",
        "h1",
        "h6",
        ["h2", "h3", "h4"],
        "h5",
        k=2,
        chunk_policy={"kind": "fixed", "size": 16384, "gap_s": 0.02},  # ~2 s
        faults={"h3": {"forge_chunk": 10}, "h4": {"replay_chunk": 5}},
    )
    for ep in [*plan.intermediates, plan.leader, plan.destination]:
        assert ep is not None
        ep.port = free_port(ep.ip)
    plan.dest_port = plan.destination.port
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(res=bed.migrate(plan)))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # junk while the relay is busy
        try:
            if bed.status("h5", migration="m-junk")["stats"].get("chunks", 0) >= 5:
                break
        except MgmtError:
            pass
        time.sleep(0.02)
    assert plan.leader is not None
    src_key = plan.source.pubkey
    inter_key = plan.intermediates[0].pubkey
    _junk(plan.leader.ip, plan.leader.port, inter_key)
    _junk(plan.intermediates[0].ip, plan.intermediates[0].port, src_key)
    _junk(plan.destination.ip, plan.destination.port, plan.leader.pubkey)
    assert t.is_alive()  # the junk arrived during the migration
    t.join(60)
    res = out["res"]
    assert res.ok, res.reason
    assert ask_service(HOSTS["h6"], 7000)["counter"] == before + 1
    stats = res.role_stats
    assert stats["leader:h5"]["rejected"] >= 4 + 1  # the junk and the forged chunk
    assert stats["intermediate:h2"]["rejected"] >= 4
    assert stats["destination:h6"]["rejected"] >= 4
    assert "h3" in res.failed_intermediates  # dropped for forging, its chunks re-sent
    assert stats["leader:h5"]["duplicates"] >= 1  # h4's replay, dropped
    with open(os.path.join(bed.root, "h5.log")) as f:
        log = f.read()
    assert "event=reject" in log and "authentication failed" in log


def record_lengths(stream: bytes) -> list[int]:
    """The length fields of the hop records in one direction of a captured connection."""
    out, off = [], 0
    while off + 4 <= len(stream):
        n = int.from_bytes(stream[off : off + 4], "big")
        out.append(n)
        off += 4 + n
    return out


def test_chunk_records_follow_the_profile_within_the_budget(bed: LoopbackBed) -> None:
    sizes = [3000, 9000, 20000]
    budget = 8e6  # bytes/s for the whole migration, shared by the three hops
    plan = bed.plan(
        "m-shape",
        "stealth",
        "h1",
        "h6",
        ["h2", "h3", "h4"],
        "h5",
        k=2,
        chunk_policy={
            "kind": "profile",
            "profile": {"message_sizes": sizes, "gaps_s": [0.0005]},
            "rate_budget_bps": budget,
        },
    )
    ep = plan.intermediates[0]
    ep.listen_port, ep.port = free_port(ep.ip), free_port(ep.ip)
    proxy = RecordingProxy(ep.ip, ep.port, (ep.ip, ep.listen_port))
    res = bed.migrate(plan)
    proxy.close()
    assert res.ok, res.reason
    sent = sum(v for k, v in res.bytes_per_hop.items() if k.startswith("h1->"))
    assert res.migration_time_s >= 0.9 * sent / budget  # paced within the rate budget
    up = [bytes(b) for d, b in proxy.streams if d == "up"]
    assert len(up) == 1
    lengths = record_lengths(up[0])[2:]  # after handshake message 1 and the first record
    assert len(lengths) > 50
    drawn = sum(n in sizes for n in lengths)
    assert drawn >= len(lengths) - 4  # all but manifest, last chunk and trailer
    assert {n for n in lengths if n in sizes} == set(sizes)


def test_recorded_hops_replayed_to_the_leader_and_an_intermediate_are_refused(
    bed: LoopbackBed,
) -> None:
    """A hop recorded on the wire and replayed as a new connection while the migration runs: the
    receiver has accepted that sender's key once in this migration already (``seen``), so it
    refuses the replay before answering anything (no handshake message 2, no ack: no key+nonce
    pair can repeat); the migration completes. (Without ``seen`` a replay gets a fresh message 2
    only and its records fail authentication: ``tests/unit/test_hosts_noise_replay.py``.)"""
    plan = bed.plan(
        "m-replay",
        "stealth",
        "h1",
        "h6",
        ["h2", "h3", "h4"],
        "h5",
        k=2,
        chunk_policy={"kind": "fixed", "size": 16384, "gap_s": 0.02},  # ~2 s
    )
    assert plan.leader is not None
    targets = {"h5": plan.leader, "h2": plan.intermediates[0]}
    proxies = {}
    for host, ep in targets.items():
        ep.listen_port, ep.port = free_port(ep.ip), free_port(ep.ip)
        proxies[host] = RecordingProxy(ep.ip, ep.port, (ep.ip, ep.listen_port))
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(res=bed.migrate(plan)))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # replay while the relays are busy
        try:
            if bed.status("h5", migration="m-replay")["stats"].get("chunks", 0) >= 5:
                break
        except MgmtError:
            pass
        time.sleep(0.02)
    answers = {}
    for host, ep in targets.items():
        (_, up), _ = proxies[host].streams[:2]
        recording = bytes(up)
        answer = replay((ep.ip, ep.listen_port), recording)
        assert answer == b"", host  # not even message 2: nothing went to the replay
        answers[host] = answer
    assert t.is_alive()  # the replays arrived during the migration
    t.join(60)
    for p in proxies.values():
        p.close()
    res = out["res"]
    assert res.ok, res.reason
    assert res.role_stats["leader:h5"]["rejected"] >= 1
    assert res.role_stats["intermediate:h2"]["rejected"] >= 1
    assert res.role_stats["leader:h5"]["duplicates"] == 0  # nothing of the replay got in
    for host in targets:
        with open(os.path.join(bed.root, f"{host}.log")) as f:
            log = f.read()
        assert "event=reject" in log and "already connected" in log, host
