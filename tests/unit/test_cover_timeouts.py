"""Over cover, timeouts grow with a low cover rate (a peer's slots are seconds apart there): the
mux's stream timeout and a role's stall timeout, never below what was configured."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import public_hex
from hosts.cover import CoverMux
from hosts.protocol.cover import CoverConfig, CoverPeer, CoverSettings
from hosts.roles.base import stall_for_rate


def test_timeouts_scale_with_a_low_cover_rate() -> None:
    """At a low rate a peer's slots are seconds apart: the mux's stream timeout and a role's
    stall timeout grow with it, and never shrink below what was configured."""
    keys = [X25519PrivateKey.generate() for _ in range(16)]
    ips = [f"127.0.250.{i + 1}" for i in range(16)]

    def mux(rate: float) -> CoverMux:
        st = CoverSettings(rate, stream_timeout_s=20.0)
        peers = tuple(CoverPeer(f"h{j}", ips[j], public_hex(keys[j])) for j in range(1, 16))
        return CoverMux(CoverConfig(st, "h0", ips[0], peers), keys[0])

    slow, fast = mux(20_000.0), mux(2e6)
    pair_interval = 15 * 8704 / 20_000.0
    assert slow.stream_timeout >= 20 * pair_interval > 20.0
    assert fast.stream_timeout == 20.0
    assert stall_for_rate(400_000.0, 32) == pytest.approx(4 * 32 * 65536 / 400_000.0)
    assert stall_for_rate(1.5e6, 32) < 15.0  # the plan's default stays in force there
    with pytest.raises(ValueError, match="rate"):
        stall_for_rate(0.0, 32)
