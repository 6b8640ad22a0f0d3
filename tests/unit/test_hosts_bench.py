"""The protocol benchmark's pure parts: the openssl table parser and the crypto figures."""

from __future__ import annotations

from experiments.bench_protocol import bench_aes, bench_shamir, parse_openssl_speed

OPENSSL_OUT = """version: 3.0.17
built on: Sun Jul  6 12:00:00 2025 UTC
options: bn(64,64)
CPUINFO: OPENSSL_ia32cap=0x7ffaf3bfffebffff:0x40069c219c97a9
The 'numbers' are in 1000s of bytes per second processed.
type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes
AES-256-GCM     541963.51k  1500934.81k  2626357.33k  3160000.00k  3300000.00k  3310000.00k
"""


def test_parse_openssl_speed() -> None:
    got = parse_openssl_speed(OPENSSL_OUT)
    assert got["block_bytes"] == 16384
    assert abs(got["MBps"] - 3310.0) < 1e-6
    assert set(got["by_block"]) == {"16", "64", "256", "1024", "8192", "16384"}
    assert "error" in parse_openssl_speed("nothing here")


def test_crypto_figures_are_positive() -> None:
    a = bench_aes(seconds=0.05, chunk=16384)
    assert a["seal_MBps"] > 0 and a["open_MBps"] > 0
    s = bench_shamir(rounds=5)
    assert s["split_us"] > 0 and s["combine_us"] > 0
