"""The design-aware attacker: an adversary who has read this repository (Kerckhoffs' principle).

It knows the protocol as published here and looks for it in the packets, nothing else:

1. **hops**: every TCP connection is checked against what a migration hop looks like on the wire
   (``hop_connections``): its server port is a relay port; its first records have the
   handshake's sizes (Noise IK's message 1 and 2, or the cleartext hello it replaced); its
   server sends records of exactly an ACK's size back. Any one marks the connection as a hop
   (a port alone only when the connection carries data: a scan's SYN is not a hop). A
   handshake on the cover port (``COVER_PORT``) is none: every cover connection opens with one.
2. **trace** (``relay_structure``): the hops form a graph (client → server, the direction the
   image flows); the component that best fits the relay's fan-out shape (source → n
   intermediates → one leader → destination, or source → destination for a direct migration)
   is the relay graph. Its root is the source; the leader is the host several hops feed (or,
   without that merge seen, a fan-out's second level, or the sender of a chain's last hop when
   that hop carries the merged image); the destination is a sink past the leader, and a
   single hop's server for a direct migration. Intermediates and the leader are never named:
   when the leader's own hop was not seen, the destination stays unknown.
3. **detect**: a window's score is the hop traffic in it (handshakes opened, log bytes), plus a
   lower score for the *lead-in* before the relay's first handshake, when the source already
   sniffs and the roles are set up: its length is learnt from the other trials with the same
   shape (labels of the other trials only, as an attacker who rehearsed), else the published
   sniffing time. Alarms are raised only on windows with hop traffic, so the time to detect is
   never back-dated.
4. **name**: the destination ranking is the relay graph's sinks, then the hosts that play no role
   in it (in a seeded random order: the attacker has nothing better), then the relay hosts, the
   source last. A hidden destination's virtual address was resolved by ``attacks.view`` the way
   ``attacks.aliases`` does where the vantage point sees the rewrite; where it does not, the
   sink stays virtual and the ranking falls back to the uninvolved hosts.

Without any hop in the capture it knows nothing and says so (the detection's notes: "no hop
found"): every window scores 0, the rankings are a seeded random order (chance) and the relay
graph is empty. The protocol's constants are copied below with the file they come
from (``attacks`` must not import ``hosts`` or ``controllers``);
``tests/unit/test_attacks_designaware.py`` checks them against the project, so drift fails a test.

Registered in ``attacks.pipeline.ATTACKERS`` as ``"design-aware"``. Callers: the pipeline, tests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from attacks.capture import TCP_ACK, TCP_SYN, int_to_ip, ip_to_int
from attacks.detection import Detection
from attacks.identify import HostRanking
from attacks.relaygraph import RelayGraph
from attacks.view import AttackContext, AttackerView, AttackResult

# --- the protocol as published (copied; tests/unit/test_attacks_designaware.py compares) -----
RELAY_PORTS = range(8090, 8100)  # controllers/migrations.py RELAY_PORTS: every hop's listener
TENANT_PORTS = range(8080, 8090)  # controllers/migrations.py comment; experiments/fleet.py 8080
VIRTUAL_NET = (ip_to_int("10.255.0.0"), 16)  # controllers/addresses.py: the hidden destinations
# hosts/protocol/cover.py COVER_PORT: the cover arm's records; every cover connection opens with
# a handshake padded to record sizes, so a handshake there marks no hop (attacks.coveraware
# reads that traffic)
COVER_PORT = 8443
SNIFF_S = 3.0  # controllers/migrations.py DEFAULTS chunk_policy sniff_s: profile sniffing first

LEN_PREFIX = 4  # hosts/channel.py _LEN: every record and handshake message is u32 length ‖ body
AEAD_TAG = 16  # hosts/channel.py / hosts/roles/source.py TAG: AES-GCM tag of a record
X25519 = 32  # hosts/channel.py: raw X25519 public key
PAD_STEP, PAD_MAX = 4, 255 * 4  # hosts/channel.py: handshake padding os.urandom(1)[0] * 4 bytes
# the hop handshake, hosts/channel.py Channel.connect/accept. Noise IK (since the noise merge):
# msg1 = e (32) + encrypted s (32 + tag) + padding payload + tag; msg2 = e (32) + padding
# payload + tag; then the initiator's first transport record, padding only (_MIN_MSG1, _MIN_MSG2).
# The cleartext hello it replaced (ephemeral ‖ static key ‖ padding, no answer) is kept: old
# captures, and any build that still speaks it.
HELLO_BODY = 2 * X25519
NOISE_MSG1_BODY = X25519 + (X25519 + AEAD_TAG) + AEAD_TAG
NOISE_MSG2_BODY = X25519 + AEAD_TAG
NOISE_CONFIRM_BODY = AEAD_TAG
FRAME_HEADER = 9  # hosts/wire.py HEADER.size: magic 2, version, type, flags, body_len u32
CHUNK_HEAD = 12  # hosts/wire.py CHUNK_HEAD.size: index u32, last u8, nonce prefix 7
ACK_BODY = 4  # hosts/wire.py ack_body: next_expected u32
# hosts/roles/source.py CHUNK_RECORD_OVERHEAD: chunk record length = plaintext + this
CHUNK_RECORD_OVERHEAD = FRAME_HEADER + CHUNK_HEAD + AEAD_TAG + AEAD_TAG
ACK_RECORD_WIRE = LEN_PREFIX + AEAD_TAG + FRAME_HEADER + ACK_BODY  # an ACK record on the wire
MIN_CHUNK, MAX_CHUNK = 512, 4 << 20  # hosts/traffic.py: chunk (record) sizes a policy draws
FIXED_CHUNK = 65536  # hosts/protocol/plan.py Defaults.chunk_size: the fixed policy's chunk
POLICY_KINDS = ("cover", "fixed", "profile")  # hosts/chunk_policy.py POLICIES


def handshake_sizes(body: int) -> np.ndarray:
    """Every wire length (prefix included) of a handshake message of ``body`` fixed bytes plus
    the protocol's padding (0..PAD_MAX in steps of PAD_STEP)."""
    return LEN_PREFIX + body + np.arange(0, PAD_MAX + 1, PAD_STEP)


HELLO_WIRE = handshake_sizes(HELLO_BODY)
NOISE_MSG1_WIRE = handshake_sizes(NOISE_MSG1_BODY)
NOISE_MSG2_WIRE = handshake_sizes(NOISE_MSG2_BODY)
NOISE_CONFIRM_WIRE = handshake_sizes(NOISE_CONFIRM_BODY)
FIRST_SEGMENTS = 3  # data segments per connection the handshake test looks at

HOP_DTYPE = np.dtype(
    [
        ("client", "u4"),
        ("server", "u4"),
        ("cport", "u2"),
        ("sport", "u2"),
        ("t_open", "f8"),
        ("t_close", "f8"),
        ("bytes", "f8"),  # payload bytes, both directions
        ("port", "?"),  # the server listens on a relay port
        ("handshake", "?"),  # the first records have a hop handshake's sizes
        ("acks", "?"),  # the server sends ACK-sized records back
    ]
)


def hop_connections(packets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every TCP connection with its hop evidence, and each packet's connection (−1: not TCP).

    The client is the SYN's sender; without a SYN in the capture, the side on a relay or tenant
    port is the server, else the side with the lower port.
    """
    conn_of = np.full(len(packets), -1, dtype=np.int64)
    tcp = np.nonzero(packets["proto"] == 6)[0]
    if not len(tcp):
        return np.zeros(0, dtype=HOP_DTYPE), conn_of
    p = packets[tcp]
    a = p["src"].astype(np.uint64) << np.uint64(16) | p["sport"].astype(np.uint64)
    b = p["dst"].astype(np.uint64) << np.uint64(16) | p["dport"].astype(np.uint64)
    pair = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    uniq, cid = np.unique(pair, axis=0, return_inverse=True)
    cid = cid.ravel()
    conn_of[tcp] = cid
    n = len(uniq)
    # which end is the client: the SYN's sender, else the end not on a known service port
    lo_port = (uniq[:, 0] & np.uint64(0xFFFF)).astype(np.int64)
    hi_port = (uniq[:, 1] & np.uint64(0xFFFF)).astype(np.int64)
    known = np.concatenate([np.asarray(RELAY_PORTS), np.asarray(TENANT_PORTS)])
    client_is_lo = np.where(np.isin(lo_port, known) & ~np.isin(hi_port, known), False,
                            np.where(np.isin(hi_port, known) & ~np.isin(lo_port, known), True,
                                     lo_port > hi_port))
    syn = np.nonzero((p["flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN)[0]
    if len(syn):
        first = syn[np.unique(cid[syn], return_index=True)[1]]
        client_is_lo[cid[first]] = a[first] == uniq[cid[first], 0]
    client_end = np.where(client_is_lo, uniq[:, 0], uniq[:, 1])
    server_end = np.where(client_is_lo, uniq[:, 1], uniq[:, 0])
    out = np.zeros(n, dtype=HOP_DTYPE)
    out["client"] = (client_end >> np.uint64(16)).astype(np.uint32)
    out["server"] = (server_end >> np.uint64(16)).astype(np.uint32)
    out["cport"] = (client_end & np.uint64(0xFFFF)).astype(np.uint16)
    out["sport"] = (server_end & np.uint64(0xFFFF)).astype(np.uint16)
    out["t_open"] = np.full(n, np.inf)
    np.minimum.at(out["t_open"], cid, p["ts"])
    out["t_close"] = np.full(n, -np.inf)
    np.maximum.at(out["t_close"], cid, p["ts"])
    plen = p["plen"].astype(np.int64)
    out["bytes"] = np.bincount(cid, weights=plen, minlength=n)
    from_client = a == client_end[cid]
    out["port"] = np.isin(out["sport"], np.asarray(RELAY_PORTS)) & (out["bytes"] > 0)
    acks = np.bincount(cid[~from_client & (plen == ACK_RECORD_WIRE)], minlength=n)
    out["acks"] = acks >= 2
    out["handshake"] = _handshakes(p, cid, from_client, n) & (out["sport"] != COVER_PORT)
    return out, conn_of


def _handshakes(p: np.ndarray, cid: np.ndarray, from_client: np.ndarray, n: int) -> np.ndarray:
    """Connections whose first data segments (retransmissions dropped) are a hop handshake:
    a hello the client follows with more records of its own, or Noise IK's message 1, message 2
    and more from the client."""
    data = np.nonzero(p["plen"] > 0)[0]
    if not len(data):
        return np.zeros(n, dtype=bool)
    key = np.stack([cid[data], from_client[data].astype(np.int64), p["seq"][data]], axis=1)
    _, keep = np.unique(key, axis=0, return_index=True)  # first copy of each segment
    data = data[keep]
    data = data[np.lexsort([p["ts"][data], cid[data]])]
    c = cid[data]
    start = np.ones(len(c), dtype=bool)
    start[1:] = c[1:] != c[:-1]
    rank = np.arange(len(c)) - np.maximum.accumulate(np.where(start, np.arange(len(c)), 0))
    lens = np.full((n, FIRST_SEGMENTS), -1, dtype=np.int64)
    dirs = np.zeros((n, FIRST_SEGMENTS), dtype=bool)
    sel = rank < FIRST_SEGMENTS
    lens[c[sel], rank[sel]] = p["plen"][data[sel]]
    dirs[c[sel], rank[sel]] = from_client[data[sel]]
    hello = np.isin(lens[:, 0], HELLO_WIRE) & dirs[:, 0] & (lens[:, 1] > 0) & dirs[:, 1]
    noise = (
        np.isin(lens[:, 0], NOISE_MSG1_WIRE) & dirs[:, 0]
        & np.isin(lens[:, 1], NOISE_MSG2_WIRE) & ~dirs[:, 1]
        & (lens[:, 2] > 0) & dirs[:, 2]
    )
    return hello | noise


@dataclass
class RelayStructure:
    """The relay as the attacker reconstructs it from the hops (IPs as strings)."""

    edges: list[tuple[str, str]]
    source: str | None = None
    destinations: list[str] = field(default_factory=list)  # best first
    relays: list[str] = field(default_factory=list)  # intermediates and leader
    relayed: bool = False  # the stealth shape (fan-out, merge or a chain), not a single hop
    first_handshake: float | None = None


def relay_structure(hops: np.ndarray, merge_ratio: float = 1.5) -> RelayStructure:
    """The hop component that best fits the protocol's shape, rooted at its source.

    Components are ranked by (a merge seen, a fan-out seen, depth, bytes). The root is a host
    with hop out-edges and none in. The leader is the host at least two hops feed (the n → 1
    merge); without one seen, a fan-out's depth-2 hosts are leaders; in a plain chain the last
    hop is the leader's own when it carries ``merge_ratio`` times the chain's first hop (the
    leader forwards all n shares of the image, an intermediate one). The destinations are the
    sinks past a leader, deepest first, then by bytes received; a single hop's server is the
    destination of a direct migration.
    """
    if not len(hops):
        return RelayStructure([])
    import networkx as nx

    g = nx.DiGraph()
    for h in hops:
        c, s = int_to_ip(h["client"]), int_to_ip(h["server"])
        if c == s:
            continue
        if g.has_edge(c, s):
            g[c][s]["bytes"] += float(h["bytes"])
            g[c][s]["t"] = min(g[c][s]["t"], float(h["t_open"]))
        else:
            g.add_edge(c, s, bytes=float(h["bytes"]), t=float(h["t_open"]))
    if not g.number_of_edges():
        return RelayStructure([])
    best: tuple | None = None
    for comp in nx.weakly_connected_components(g):
        sub = g.subgraph(comp)
        roots = [v for v in sub if sub.in_degree(v) == 0] or list(sub)
        root = max(roots, key=lambda v: (sub.out_degree(v), sub.out_degree(v, weight="bytes"), v))
        depth = nx.single_source_shortest_path_length(sub, root)
        merged = any(sub.in_degree(v) >= 2 for v in depth if v != root)
        fan = sub.out_degree(root) >= 2
        volume = sum(d["bytes"] for _, _, d in sub.edges(data=True))
        rank = (merged, fan, max(depth.values()), volume)
        if best is None or rank > best[0]:
            best = (rank, sub, root, depth)
    assert best is not None
    (merged, fan, deepest, _), sub, root, depth = best
    inbound = dict(sub.in_degree(weight="bytes"))
    sinks = [v for v in depth if v != root and sub.out_degree(v) == 0]
    if merged:  # the leader: fed by the most hops
        leaders = [max((v for v in depth if v != root),
                       key=lambda v: (sub.in_degree(v), inbound.get(v, 0.0)))]
    elif fan:
        leaders = [v for v, d in depth.items() if d == 2]
    elif deepest >= 2:  # a chain: did its last hop carry the merged image?
        last = max(sinks, key=lambda v: (depth[v], inbound.get(v, 0.0)))
        first = max(d["bytes"] for _, _, d in sub.out_edges(root, data=True))
        into = max(d["bytes"] for _, _, d in sub.in_edges(last, data=True))
        leaders = [p for p in sub.predecessors(last)] if into >= merge_ratio * first else [last]
    else:  # one hop: a direct migration
        leaders = [root]
    below = set().union(*(nx.descendants(sub, v) for v in leaders)) if leaders else set()
    dests = sorted((v for v in sinks if v in below and v not in leaders),
                   key=lambda v: (-depth[v], -inbound.get(v, 0.0), v))
    relays = sorted((v for v in depth if v != root and v not in dests), key=lambda v: depth[v])
    edges = sorted((a, b) for a, b in sub.edges() if a in depth and b in depth)
    t = min(d["t"] for _, _, d in sub.edges(data=True))
    return RelayStructure(edges, root, dests, relays, merged or fan or deepest >= 2, t)


def is_virtual(ip: str) -> bool:
    """An address of the hidden destinations' pool (``VIRTUAL_NET``)."""
    net, bits = VIRTUAL_NET
    return (ip_to_int(ip) >> (32 - bits)) == (net >> (32 - bits))


def window_scores(
    view: AttackerView, hops: np.ndarray, conn_of: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per window: hop bytes (log) plus two per handshake opened; and whether any hop was active.

    ``mask`` selects the connections counted as hops."""
    f = view.features
    nw = len(f.window_starts)
    scores = np.zeros(nw)
    if not nw or not mask.any():
        return scores, np.zeros(nw, dtype=bool)
    t0, w = float(f.window_starts[0]), f.window_s
    pk = view.packets
    on = (conn_of >= 0) & mask[np.maximum(conn_of, 0)]
    idx = np.clip(((pk["ts"][on] - t0) // w).astype(np.int64), 0, nw - 1)
    active = np.bincount(idx, minlength=nw)[:nw] > 0
    nbytes = np.bincount(idx, weights=pk["plen"][on].astype(float), minlength=nw)[:nw]
    opened = hops["t_open"][mask]
    oidx = np.clip(((opened - t0) // w).astype(np.int64), 0, nw - 1)
    shakes = np.bincount(oidx, minlength=nw)[:nw]
    scores = np.where(active, 2.0 + np.log1p(nbytes) + 2.0 * shakes, 0.0)
    return scores, active


def _lead_in(structs: list[RelayStructure], views: list[AttackerView],
             labels: list[np.ndarray | None], i: int,
             groups: list[str] | None = None) -> float:
    """Seconds before the relay's first handshake that the migration already runs: the median
    over the *other* trials of the same shape whose labels are known — never a trial of the
    same seed group (its twin), see ``AttackContext.groups`` — else the published sniffing time
    for a relay (a direct migration starts with its hop)."""
    me = structs[i]
    if me.first_handshake is None:
        return 0.0
    leads = []
    for j, (s, v, y) in enumerate(zip(structs, views, labels, strict=True)):
        if j == i or y is None or not y.any() or s.first_handshake is None:
            continue
        if groups is not None and groups[j] == groups[i]:
            continue
        if s.relayed != me.relayed:
            continue
        leads.append(max(0.0, s.first_handshake - float(v.features.window_starts[np.argmax(y)])))
    if leads:
        return float(np.median(leads))
    return SNIFF_S if me.relayed else 0.0


def _ranking(struct: RelayStructure, hosts: list[str], rng: np.random.Generator) -> HostRanking:
    """Sinks first, then the hosts without a role (random order), relays, the source last."""
    order = [hosts[k] for k in rng.permutation(len(hosts))]
    roles = set(struct.relays) | set(struct.destinations) | {struct.source}
    dst = [h for h in struct.destinations if h in hosts]
    dst += [h for h in order if h not in roles]
    dst += [h for h in struct.relays[::-1] if h in hosts]
    dst += [h for h in [struct.source] if h in hosts and h not in dst]
    src = [h for h in [struct.source] if h in hosts] + [h for h in order if h != struct.source]
    n = len(hosts)
    return HostRanking([(h, float(n - k)) for k, h in enumerate(src)],
                       [(h, float(n - k)) for k, h in enumerate(dst)])


def analyze(view: AttackerView, ctx: AttackContext, struct: RelayStructure,
            hops: np.ndarray, conn_of: np.ndarray, lead_s: float) -> AttackResult:
    """Detection, ranking and relay graph of one view (its packets only, plus ``lead_s``)."""
    f = view.features
    hop = hops["port"] | hops["handshake"] | hops["acks"]
    scores, active = window_scores(view, hops, conn_of, hop)
    if struct.first_handshake is not None and lead_s > 0 and len(scores):
        t, ends = struct.first_handshake, f.window_starts + f.window_s
        lead = (ends > t - lead_s) & (f.window_starts <= t)
        scores = np.where(lead & ~active, 1.0, scores)
    notes = [f"hops={int(hop.sum())}", f"lead_in_s={lead_s:.2f}"]
    if not hop.any():
        notes.append("no hop found: no relay port, hop handshake or ACK record in the capture")
    det = Detection("design-aware", f.window_starts, f.window_s, scores, active, 1.5, notes)
    detections = {"design-aware": det}
    for name in ("port", "handshake", "acks"):
        s, a = window_scores(view, hops, conn_of, hops[name])
        detections[name] = Detection(name, f.window_starts, f.window_s, s, a, 1.5)
    pk = view.packets
    seen = np.union1d(pk["src"], pk["dst"]) if len(pk) else np.zeros(0, dtype=np.uint32)
    pool = sorted(ctx.candidates) if ctx.candidates is not None else seen.tolist()
    hosts = [ip for ip in (int_to_ip(h) for h in pool) if not is_virtual(ip)]  # not a host
    rng = np.random.default_rng([ctx.seed, view.trial, 7])
    ranking = _ranking(struct, hosts, rng)
    edges = struct.edges
    if not edges and hop.any() and ranking.source and ranking.destination:  # a guess from hops
        s, d = ranking.source[0][0], next((h for h, _ in ranking.destination
                                           if h != ranking.source[0][0]), None)
        edges = [(s, d)] if d else []
    return AttackResult(
        attacker=ctx.name,
        trial=view.trial,
        detection=det,
        detections=detections,
        ranking=ranking,
        graph=RelayGraph(edges=list(edges)),
        aliases={int_to_ip(k): int_to_ip(v) for k, v in view.aliases.items()},
    )


def attack(views: list[AttackerView], ctx: AttackContext) -> list[AttackResult]:
    """The design-aware attacker on one vantage point's views of every trial."""
    found = [hop_connections(v.packets) for v in views]
    structs = []
    for hops, _ in found:
        hop = hops["port"] | hops["handshake"] | hops["acks"]
        structs.append(relay_structure(hops[hop]))
    labels = list(ctx.labels) if ctx.labels else [None] * len(views)
    return [
        analyze(v, ctx, structs[i], found[i][0], found[i][1],
                _lead_in(structs, views, labels, i, ctx.groups))
        for i, v in enumerate(views)
    ]


def describe(hops: np.ndarray) -> Counter:
    """How many connections each piece of evidence marks (for logs and tests)."""
    c: Counter = Counter()
    for name in ("port", "handshake", "acks"):
        c[name] = int(hops[name].sum())
    c["hops"] = int((hops["port"] | hops["handshake"] | hops["acks"]).sum())
    return c

