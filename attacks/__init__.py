"""The attackers of the threat model (DESIGN.md): they see packets, never defender state.

Nothing in this package imports ``hosts``, ``controllers``, ``experiments`` or ``topologies``
(import-linter checks it). Entry points for the experiments and the demo:

- ``attacks.capture.read_pcap(path, vantage=None) -> Capture``: the one pcap reader (classic pcap
  vectorised, pcapng and others through scapy; Ethernet, Linux cooked v1/v2, raw IP) into a numpy
  packet table.
- ``attacks.truth``: the ground-truth schema (``TrialTruth``, ``RunTruth``, ``load_truth``,
  ``write_truth``) and the vantage-point name type ``Vantage``.
- ``attacks.pipeline.analyze_run(captures, truths, window_s=1.0, candidates=None, seed=0)
  -> (results, records, metrics)``: every attacker of ``pipeline.ATTACKERS`` (the built-in
  ``attacks.passive``: detection per window, ranked sources and destinations, the relay graph of
  ``attacks.evidence`` + ``attacks.relaygraph``) on every vantage point (``switch:<name>`` per
  capture, ``global`` for all of a trial's captures) of every trial (views: ``attacks.view``);
  then scoring (``attacks.scoring``, the only place that reads the ground truth of the trial
  being scored).
- ``attacks.cli.main(argv) -> int``: ``stealth-mtd attack analyze --pcap-dir ... --ground-truth
  ... --out metrics.json``.
- ``attacks.live.LiveDetector`` and ``attacks.live.live_capture(detector, iface=...)``: the guess
  as it forms, for the demo.
- ``attacks.active``: ARP/ping sweeps, traceroute, service fingerprint scan, first-packet latency
  probes, each with a separate analysis function.
- ``attacks.intermediate.curious_intermediate(shares, chunk_bodies, labels)``: the
  honest-but-curious relay's attempt on the key and the destination.
"""
