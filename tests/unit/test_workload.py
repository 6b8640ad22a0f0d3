"""Normal-traffic workload: flow-size sampling and a real request/response exchange on loopback."""

import random
import statistics

import pytest

from hosts.workload import CDFS, MSS, flow_sizes, one_flow, run_client, serve


def test_websearch_sampling_matches_its_cdf():
    sizes = flow_sizes("websearch", cap=1 << 40)
    rng = random.Random(1)
    xs = [sizes.sample(rng) for _ in range(20000)]
    # the CDF's own quantiles, within sampling error
    for pkts, p in CDFS["websearch"][1:-1]:
        frac = sum(x <= pkts * MSS for x in xs) / len(xs)
        assert abs(frac - p) < 0.02, (pkts, p, frac)
    assert statistics.median(xs) < statistics.mean(xs) / 5  # heavy tail


def test_cap_and_unknown_name():
    sizes = flow_sizes("datamining", cap=100_000)
    rng = random.Random(2)
    assert max(sizes.sample(rng) for _ in range(5000)) == 100_000
    with pytest.raises(ValueError, match="unknown flow-size"):
        flow_sizes("nope", 1)


def test_real_flows_on_loopback():
    srv = serve("127.0.0.31", 0)
    port = srv.server_address[1]
    try:
        assert one_flow("127.0.0.32", ("127.0.0.31", port), 300_000, put=False) == 300_000
        assert one_flow("127.0.0.32", ("127.0.0.31", port), 200_000, put=True) == 200_000
        stats = run_client(
            "127.0.0.32",
            [("127.0.0.31", port)],
            seed=5,
            flows_per_s=40,
            sizes=flow_sizes("websearch", 200_000),
            duration=1.0,
            bulk_per_min=0,
        )
        assert stats.flows > 10 and stats.failed == 0 and stats.bytes > 0
    finally:
        srv.shutdown()
