"""Attacker vantage points in the running network, and the captures they make.

- ``switch:NAME`` — a compromised switch: an OVS port mirror on NAME copies every packet of every
  port to an attacker host ``x<j>`` attached to that switch, and a capture runs inside that host
  (DESIGN.md: mirrors work on the userspace datapath and the mirrored frames reach the host).
- ``global`` — the global passive adversary: one capture in the root namespace on every switch
  port at once (``tcpdump -i any``, Linux cooked headers); a packet appears once per link it
  crosses, which the analysis de-duplicates.

Captures are written by tcpdump (pcap files that Wireshark and scapy open; tcpdump keeps up with
the userspace datapath where a Python sniffer would drop packets on 2 cores) with a small snap
length (headers only). The live demo sniffs with scapy's AsyncSniffer instead
(``attacks.capture.packet_record``). Each capture reports what it dropped, so a number is never
silently computed from a lossy capture. Names are ``attacks.truth.Vantage``: the scenario's
``switch:e1`` is the pcap ``switch-e1<tag>.pcap`` and the key ``switch-e1`` of a trial's
``pcaps``/``capture_stats`` (``Vantage.file_stem``). Called by the runner and the root tests.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks.truth import Vantage

SNAPLEN = 128
BPF = "ip or arp"


@dataclass
class VantageCapture:
    """One attacker vantage point and its capture process."""

    vantage: Vantage
    attacker_host: str | None = None
    pcap: Path | None = None
    proc: subprocess.Popen | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``'switch-e1'`` / ``'global'``: the key of the trial's ``pcaps`` and
        ``capture_stats``."""
        return self.vantage.file_stem


def attacker_for(description: dict[str, Any], switch: str) -> str:
    """The attacker host attached to ``switch`` (the topology must have one there)."""
    for h in description["hosts"]:
        if h["attacker"] and h["switch"] == switch:
            return h["name"]
    raise ValueError(f"no attacker host on switch {switch}: add it to the topology's attackers")


def mirror_to(switch: str, out_intf: str) -> None:
    """Mirror every packet of ``switch`` to its port ``out_intf`` (an OVS port mirror).

    The userspace datapath keeps forwarding the flows it already has without the new mirror
    (measured here: a TCP flow begun before the mirror was invisible to it for its whole life,
    while flows begun after were seen), so the datapath's flows are purged: every packet after
    this goes up once more and is translated with the mirror in place."""
    subprocess.run(
        ["ovs-vsctl", "--", "--id=@out", "get", "Port", out_intf,
         "--", "--id=@m", "create", "Mirror", f"name=smtd-{switch}", "select-all=true",
         "output-port=@out", "--", "add", "Bridge", switch, "mirrors", "@m"],
        check=True, capture_output=True, text=True)
    _purge_datapath()


def clear_mirrors(switches: list[str]) -> None:
    """Remove every port mirror of ``switches``; the datapath's cached flows that copied to them
    are purged too (else they go on copying until something revalidates them)."""
    for sw in switches:
        subprocess.run(["ovs-vsctl", "clear", "Bridge", sw, "mirrors"], check=True,
                       capture_output=True)
    _purge_datapath()


def _purge_datapath() -> None:
    """Drop the userspace datapath's cached flows: the next packets are translated afresh, with
    the mirrors as they are now."""
    subprocess.run(["ovs-appctl", "revalidator/purge"], check=True, capture_output=True,
                   text=True)


def start(tb: Any, spec: str | Vantage, out_dir: Path, tag: str = "") -> VantageCapture:
    """Set up the vantage point ``spec`` (``'switch:e1'``, ``'global'``) in testbed ``tb`` and
    start its capture."""
    vantage = spec if isinstance(spec, Vantage) else Vantage.parse(spec)
    switch = vantage.switch
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap = out_dir / f"{vantage.file_stem}{tag}.pcap"
    cmd = ["tcpdump", "-n", "-U", "-s", str(SNAPLEN), "-Z", "root", "-w", str(pcap)]
    v = VantageCapture(vantage, pcap=pcap)
    if vantage.is_global:
        # every interface of the root namespace: the switches' ports, but also the machine's
        # own; the filter keeps the testbed's addresses (10.0.0.0/8) and ARP
        cmd[1:1] = ["-i", "any", "-y", "LINUX_SLL"]
        v.proc = subprocess.Popen(cmd + ["net 10.0.0.0/8 or arp"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)
    else:
        assert switch is not None
        if switch not in tb.description["switches"]:
            raise ValueError(f"no switch named {switch}")
        attacker = attacker_for(tb.description, switch)
        host = tb.host(attacker)
        link = host.intf().link
        sw_intf = link.intf1 if link.intf2.node is host else link.intf2
        mirror_to(switch, sw_intf.name)
        v.attacker_host = attacker
        cmd[1:1] = ["-i", host.intf().name]
        v.proc = host.popen(cmd + [BPF], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_started(v)
    except BaseException:  # also Ctrl-C or SIGTERM: the caller never gets v to stop it
        stop(v)
        raise
    return v


def _wait_started(v: VantageCapture, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v.proc is not None and v.proc.poll() is not None:
            err = v.proc.stderr.read().decode(errors="replace") if v.proc.stderr else ""
            raise RuntimeError(f"capture at {v.name} failed to start: {err.strip()}")
        if v.pcap is not None and v.pcap.exists() and v.pcap.stat().st_size >= 24:
            time.sleep(0.2)  # the file header is written once the socket is open
            return
        time.sleep(0.05)
    raise RuntimeError(f"capture at {v.name} did not start within {timeout:.0f} s")


def stop(v: VantageCapture) -> dict[str, int]:
    """Stop the capture and return tcpdump's counts (captured, dropped by kernel...)."""
    if v.proc is None:
        return v.stats
    if v.proc.poll() is None:
        v.proc.send_signal(signal.SIGINT)
        try:
            v.proc.wait(10)
        except subprocess.TimeoutExpired:
            v.proc.kill()
            v.proc.wait()
    err = v.proc.stderr.read().decode(errors="replace") if v.proc.stderr else ""
    for key, pat in (("captured", r"(\d+) packets captured"),
                     ("received_by_filter", r"(\d+) packets received by filter"),
                     ("dropped_by_kernel", r"(\d+) packets dropped by kernel")):
        m = re.search(pat, err)
        if m:
            v.stats[key] = int(m.group(1))
    v.proc = None
    return v.stats
