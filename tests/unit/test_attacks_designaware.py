"""The design-aware attacker (``attacks.designaware``): its copied protocol constants still match
the project, it finds today's protocol shape in synthetic captures, and without the protocol's
marks (relay on the tenants' port, no handshake- or ACK-sized records) it is at chance.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from attacks import designaware as da
from attacks import pipeline
from attacks.capture import Capture
from attacks.truth import GLOBAL, Vantage
from tests.unit.attacks_synth import make_trial, split_vip_views

# today's protocol shape, as hosts runs it: relay port, Noise IK, 33-byte ACK records, tenants 8080
TODAY = {"service_port": 8080, "relay_port": 8093, "handshake_kind": "noise", "ack_record": 33}
# the relay with none of the protocol's marks: the tenants' port, tenant-like first records
UNMARKED = {"service_port": 8080, "relay_port": 8080}


# --- the copied constants against the project's ---------------------------------------------
def test_ports_addresses_and_policies_match_the_project():
    from controllers import addresses
    from controllers.migrations import MIGRATE_DEFAULTS, RELAY_PORTS
    from experiments.fleet import SERVICE_PORT
    from hosts.chunk_policy import POLICIES
    from hosts.protocol.plan import DEFAULTS as PLAN
    from hosts.traffic import MAX_CHUNK, MIN_CHUNK

    assert da.RELAY_PORTS == RELAY_PORTS
    assert SERVICE_PORT in da.TENANT_PORTS and not set(da.TENANT_PORTS) & set(RELAY_PORTS)
    assert da.SNIFF_S == MIGRATE_DEFAULTS["chunk_policy"]["sniff_s"]
    for i in (1, 300, addresses.POOL_SIZE):
        assert da.is_virtual(addresses.address(i).ip)
    assert not da.is_virtual("10.0.0.1") and not da.is_virtual("10.254.255.255")
    assert (da.MIN_CHUNK, da.MAX_CHUNK, da.FIXED_CHUNK) == (MIN_CHUNK, MAX_CHUNK, PLAN.chunk_size)
    assert set(da.POLICY_KINDS) == set(POLICIES)


def test_record_framing_matches_the_wire_and_the_roles():
    from hosts import channel, wire
    from hosts.roles import source

    if hasattr(channel, "_MIN_MSG1"):  # Noise IK: the smallest messages 1 and 2
        assert (channel._MIN_MSG1, channel._MIN_MSG2) == (da.NOISE_MSG1_BODY, da.NOISE_MSG2_BODY)
        assert channel.TAG == da.AEAD_TAG and channel._LEN.size == da.LEN_PREFIX

    assert da.FRAME_HEADER == wire.HEADER.size and da.CHUNK_HEAD == wire.CHUNK_HEAD.size
    assert da.ACK_BODY == len(wire.ack_body(7))
    assert da.AEAD_TAG == source.TAG
    assert da.CHUNK_RECORD_OVERHEAD == source.CHUNK_RECORD_OVERHEAD


def _records(stream: bytes) -> list[int]:
    """Wire lengths (prefix included) of the ``u32 length ‖ body`` messages of one direction."""
    out, off = [], 0
    while off + 4 <= len(stream):
        n = int.from_bytes(stream[off : off + 4], "big")
        out.append(4 + n)
        off += 4 + n
    assert off == len(stream)
    return out


def _recorded_hop(pad: int) -> tuple[list[int], list[int]]:
    """One real hop (hosts.channel) through a recording proxy: the handshake with ``pad`` bytes
    of padding, then one ACK frame; the message lengths client → server and back."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from hosts import wire
    from hosts.channel import Channel, listen, public_hex

    client_key, server_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    server, proxy = listen("127.0.0.1", 0), listen("127.0.0.1", 0)
    streams = {"c2s": bytearray(), "s2c": bytearray()}
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        ch = Channel.accept(conn, server_key, {public_hex(client_key)}, "m-test")
        got.append(ch.recv())
        ch.close()

    def pump(a: socket.socket, b: socket.socket, name: str) -> None:
        while data := a.recv(65536):
            streams[name] += data
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)

    def relay() -> None:
        down, _ = proxy.accept()
        up = socket.create_connection(server.getsockname())
        t = threading.Thread(target=pump, args=(up, down, "s2c"))
        t.start()
        pump(down, up, "c2s")
        t.join()
        down.close()
        up.close()

    threads = [threading.Thread(target=serve), threading.Thread(target=relay)]
    for t in threads:
        t.start()
    ch = Channel.connect("127.0.0.1", "127.0.0.1", proxy.getsockname()[1],
                         server_key.public_key(), client_key, "m-test", pad=pad)
    ch.send(wire.build_frame(wire.FrameType.ACK, wire.ack_body(3)))
    for t in threads[:1]:
        t.join(10)
    ch.close()
    threads[1].join(10)
    server.close()
    proxy.close()
    assert got and wire.parse_frame(got[0]).type == wire.FrameType.ACK
    return _records(bytes(streams["c2s"])), _records(bytes(streams["s2c"]))


@pytest.mark.parametrize("pad", [0, 40])
def test_handshake_and_ack_sizes_match_a_real_hop(pad):
    """Noise IK, or the hello it replaced: either way the attacker's sizes are the hop's."""
    c2s, s2c = _recorded_hop(pad)
    assert c2s[-1] == da.ACK_RECORD_WIRE
    if not s2c:  # the cleartext hello: one message, no answer
        assert c2s[0] == da.HELLO_WIRE[0] + pad and c2s[0] in da.HELLO_WIRE
        assert len(c2s) == 2
    else:  # Noise IK: message 1, message 2 back, the initiator's padding record
        assert c2s[0] == da.NOISE_MSG1_WIRE[0] + pad
        assert s2c[0] in da.NOISE_MSG2_WIRE and c2s[1] in da.NOISE_CONFIRM_WIRE
        assert len(c2s) == 3 and len(s2c) == 1


# --- synthetic captures -------------------------------------------------------------------
def _run(trials, attacker="design-aware"):
    captures = {st.truth.trial: {GLOBAL: Capture(st.table, ["global"])} for st in trials}
    truths = {st.truth.trial: st.truth for st in trials}
    results, records, _ = pipeline.analyze_run(
        captures, truths, attackers={attacker: pipeline.ATTACKERS[attacker]}
    )
    return results, records


def test_registered_for_every_vantage_point():
    assert pipeline.ATTACKERS["design-aware"] is da.attack
    st = make_trial(0, "direct", 5000, **TODAY)
    _, records, metrics = pipeline.analyze_run({0: {GLOBAL: Capture(st.table, ["global"])}},
                                               {0: st.truth})
    assert "global/design-aware" in metrics["modes"]["direct"]


@pytest.mark.parametrize("kind", ["hello", "noise"])
def test_todays_shape_is_detected_traced_and_named(kind):
    shape = dict(TODAY, handshake_kind=kind)
    trials = [make_trial(i, "stealth", 5100 + i, **shape) for i in range(3)]
    trials += [make_trial(3 + i, "direct", 5200 + i, **shape) for i in range(2)]
    trials += [make_trial(5, "background", 5300, **shape)]
    _, records = _run(trials)
    for r in records:
        if r["mode"] == "background":
            assert r["false_alarm_rate"] == 0.0
            continue
        assert r["detection_auc"] >= 0.9, r
        assert r["destination_top1"] == 1.0 and r["source_top1"] == 1.0, r
        assert r["path_precision"] == 1.0 and r["path_recall"] == 1.0, r


@pytest.mark.parametrize(
    "mark",
    [
        {"relay_port": 8095},  # the port alone
        {"handshake_kind": "hello"},  # the hello alone (on the tenants' port)
        {"handshake_kind": "noise"},  # Noise IK's messages alone
    ],
)
def test_each_mark_alone_is_enough(mark):
    shape = dict(UNMARKED, **mark)
    trials = [make_trial(i, "stealth", 5400 + i, **shape) for i in range(2)]
    _, records = _run(trials)
    for r in records:
        assert r["detection_auc"] >= 0.9 and r["destination_top1"] == 1.0, (mark, r)
        assert r["path_recall"] == 1.0, (mark, r)


def test_ack_records_alone_give_the_hops_that_carry_acks_but_not_the_last():
    """Acks travel leader → intermediates → source; the destination's hop carries none, so
    the leader is found (the n → 1 merge) and, rightly, not named as the destination."""
    trials = [make_trial(i, "stealth", 5400 + i, **UNMARKED, ack_record=33) for i in range(2)]
    results, records = _run(trials)
    for res, r in zip(results, records, strict=True):
        leader = next(t.truth.leader.ip for t in trials if t.truth.trial == r["trial"])
        assert r["detection_auc"] >= 0.9 and r["source_top1"] == 1.0, r
        assert r["path_precision"] == 1.0 and r["path_recall"] == pytest.approx(6 / 7), r
        assert res.ranking.destination[0][0] != leader


def test_without_the_protocols_marks_it_is_at_chance():
    """Same relay, same fan-out, but on the tenants' port, with tenant-sized first records and
    padded acks: the attacker has nothing it knows to go on."""
    trials = [make_trial(i, "stealth", 5500 + i, **UNMARKED) for i in range(10)]
    trials += [make_trial(10 + i, "direct", 5600 + i, **UNMARKED) for i in range(4)]
    results, records = _run(trials)
    assert all(r["detection_auc"] == 0.5 for r in records)  # every window scores the same
    assert all(not res.detection.alarms.any() for res in results)
    hits = sum(r["destination_top1"] for r in records)
    chance = np.mean([r["destination_chance"] for r in records])
    assert hits <= 2 <= 3 * chance * len(records) + 1, (hits, chance)
    assert np.mean([r["path_recall"] for r in records]) <= 0.1
    # and the passive attacker, on the very same captures, still finds the direct migrations:
    # the captures carry a migration, only the design knowledge has nothing to hold on to
    _, passive = _run(trials[10:], "passive")
    assert np.mean([r["detection_auc"] for r in passive]) > 0.9


def test_a_hidden_destination_is_resolved_where_the_rewrite_is_seen():
    st = make_trial(0, "stealth", 5700, virtual_ip=True, **TODAY)
    core, edge = split_vip_views(st.table, "10.255.0.1", st.truth.destination.ip)
    captures = {0: {Vantage("core"): Capture(core, ["core"]), Vantage("edge"): Capture(edge,
                                                                                     ["edge"])}}
    _, records, _ = pipeline.analyze_run(
        captures, {0: st.truth}, attackers={"design-aware": da.attack}
    )
    by = {r["attacker"]: r for r in records}
    assert by["global/design-aware"]["destination_top1"] == 1.0
    assert by["global/design-aware"]["path_recall"] == 1.0
    # the core switch alone sees only the virtual address: the sink is not a host it can name
    core_rec = by["switch:core/design-aware"]
    assert core_rec["destination_top1"] == 0.0 and core_rec["source_top1"] == 1.0


# --- the relay graph's shape ------------------------------------------------------------------
def _hops(edges: list[tuple[str, str, float]]) -> np.ndarray:
    from attacks.capture import ip_to_int

    out = np.zeros(len(edges), dtype=da.HOP_DTYPE)
    for k, (a, b, n) in enumerate(edges):
        out[k]["client"], out[k]["server"] = ip_to_int(a), ip_to_int(b)
        out[k]["bytes"], out[k]["t_open"], out[k]["port"] = n, 10.0 + k, True
    return out


def test_the_leader_is_never_named_as_the_destination():
    s, i1, i2, i3, lead, dst = (f"10.0.0.{k}" for k in range(1, 7))
    whole = da.relay_structure(_hops([(s, i1, 1e6), (s, i2, 1e6), (s, i3, 1e6), (i1, lead, 1e6),
                                      (i2, lead, 1e6), (i3, lead, 1e6), (lead, dst, 3e6)]))
    assert whole.source == s and whole.destinations == [dst] and whole.relayed
    assert whole.first_handshake == 10.0
    # a source's edge switch: the fan-out and one intermediate's hop to the leader
    part = da.relay_structure(_hops([(s, i1, 1e6), (s, i2, 1e6), (s, i3, 1e6), (i2, lead, 1e6)]))
    assert part.source == s and part.destinations == [] and lead in part.relays
    # a chain through one intermediate: its last hop carries the merged image, or it does not
    chain = da.relay_structure(_hops([(s, i1, 1e6), (i1, lead, 1e6), (lead, dst, 3e6)]))
    assert chain.destinations == [dst]
    short = da.relay_structure(_hops([(s, i1, 1e6), (i1, lead, 1e6)]))
    assert short.destinations == [] and short.relayed
    # one hop: a direct migration's destination
    direct = da.relay_structure(_hops([(s, dst, 8e6)]))
    assert direct.destinations == [dst] and not direct.relayed


def test_a_scan_is_not_a_hop():
    """SYNs to every relay port without data mark nothing."""
    st = make_trial(0, "background", 5800, **TODAY)
    hops, _ = da.hop_connections(st.table)
    before = da.describe(hops)["hops"]
    from tests.unit.attacks_synth import Traffic

    tr = Traffic(np.random.default_rng(1))
    for port in da.RELAY_PORTS:
        tr.connect(float(st.table["ts"][0]) + 1, "10.0.0.2", "10.0.0.3", port)
    scanned = np.concatenate([st.table, tr.table()])
    hops, _ = da.hop_connections(scanned[np.argsort(scanned["ts"], kind="stable")])
    assert da.describe(hops)["hops"] == before == 0
