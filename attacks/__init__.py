"""The attackers of the threat model (DESIGN.md): they see packets, never defender state.

Nothing in this package imports ``hosts``. Entry points for the runner and the demo:

- ``attacks.capture.read_pcap(path, vantage=None) -> Capture``: a pcap/pcapng (Ethernet, Linux
  cooked v1/v2, raw IP) streamed once into a numpy packet table.
- ``attacks.pipeline.analyze_run(captures, truths, window_s=1.0, candidates=None, seed=0)
  -> (results, records, metrics)``: every attacker (``switch:<vantage>`` per capture, ``global``
  for all of a trial's captures) on every trial: detection per window (change/CUSUM, relay
  activity, random forest trained leave-one-trial-out), ranked sources and destinations, the
  relay graph; then scoring (``attacks.scoring``, the only place that reads the ground truth of
  the trial being scored).
- ``attacks.cli.main(argv) -> int``: ``stealth-mtd attack analyze --pcap-dir ... --ground-truth
  ... --out metrics.json``.
- ``attacks.live.LiveDetector`` and ``attacks.live.live_capture(detector, iface=...)``: the guess
  as it forms, for the demo.
- ``attacks.active``: ARP/ping sweeps, traceroute, service fingerprint scan, first-packet latency
  probes, each with a separate analysis function.
- ``attacks.intermediate.curious_intermediate(shares, chunk_bodies, labels)``: the
  honest-but-curious relay's attempt on the key and the destination.
"""
