"""The VM keeps its own address across migrations, in the real network (issue 14 item 6).

A leaf-spine testbed whose VM answers at its own address (``experiments.fleet.VMSpec.ip``, from
the tenant plan) on h1. Before any move the address answers from h1; then a direct and a stealth
migration: after each the same address answers with the served counter continuing, the
destination's own address does not serve the VM's service, and the source no longer holds the
address. A client in another host asks the address every few milliseconds through both moves; the
longest time without an answer (the switch-over gap) is printed.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

# one client asking the VM's service in a loop until a stop file appears: one JSON line a try
CLIENT = textwrap.dedent("""
    import json, os, sys, time
    from hosts.vm import ask_service
    ip, port, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with open(out, "w") as f:
        while not os.path.exists(stop):
            t0 = time.time()
            try:
                r = ask_service(ip, port, timeout=0.15)
                rec = {"t0": t0, "t1": time.time(), "counter": r["counter"], "reply": r}
            except Exception as exc:
                rec = {"t0": t0, "t1": time.time(), "error": type(exc).__name__}
            f.write(json.dumps(rec) + "\\n")
            f.flush()
            time.sleep(0.005)
""")

ASK = textwrap.dedent("""
    import json, sys
    from hosts.vm import ask_service
    try:
        print(json.dumps(ask_service(sys.argv[1], int(sys.argv[2]), timeout=1.0)))
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": type(exc).__name__}))
""")

PORT = 7000


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    from experiments.fleet import VMSpec, start_agents
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo

    folder = tmp_path_factory.mktemp("vmaddr")
    (folder / "client.py").write_text(CLIENT)
    (folder / "ask.py").write_text(ASK)
    with Testbed(LeafSpineTopo(2, 2, 3, attackers="l2"), seed=11) as tb:
        start_agents(tb, VMSpec("h1", mib=4, dirty_pages_per_s=50))
        tb.folder = folder
        yield tb
        log = (tb.run_dir / "controller.log").read_text()
        assert "Traceback" not in log, log[-3000:]


def ask(tb, client, ip):
    """One request to ``ip``'s VM service from host ``client``: the reply, or the error name."""
    out = tb.host(client).cmd(f"{sys.executable} {tb.folder / 'ask.py'} {ip} {PORT}")
    return json.loads(out.strip().splitlines()[-1])


def holds_address(tb, host, ip):
    """Whether ``ip`` is configured anywhere in ``host``'s namespace."""
    return f" {ip}/" in tb.host(host).cmd("ip -o -4 addr show")


def arp_answers(tb, ip):
    """Who answers ARP for ``ip``, asked from the attacker host x1: [(ip, mac), ...]."""
    out = tb.host("x1").cmd(
        f"{sys.executable} -c \"import json; from attacks.active import arp_sweep; "
        f"r = arp_sweep(['{ip}'], iface='x1-eth0', timeout=1.0); "
        f"print(json.dumps([[a.ip, a.mac] for a in r.alive]))\"")
    return [tuple(a) for a in json.loads(out.strip().splitlines()[-1])]


def longest_gap(records):
    """The longest time between two answers that follow each other, and when it began."""
    ok = [r for r in records if "counter" in r]
    gaps = [(b["t1"] - a["t1"], a["t1"]) for a, b in zip(ok, ok[1:], strict=False)]
    return max(gaps, default=(0.0, 0.0))


def routed_at(tb, host):
    """When the controller's log says it last routed the VM address to ``host`` (epoch s)."""
    import datetime

    lines = [ln for ln in (tb.run_dir / "controller.log").read_text().splitlines()
             if f"event=vm_routed host={host} " in ln]
    stamp = lines[-1][:23]  # asctime, local time, with milliseconds
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_the_vm_address_moves_with_the_vm(bed):
    from experiments.fleet import VMSpec, wait_migration
    from topologies.base import mac_for

    tb = bed
    vm_ip = VMSpec("h1").ip
    assert vm_ip not in {h["ip"] for h in tb.description["hosts"]}
    first = ask(tb, "h2", vm_ip)
    assert first.get("vm") == "vm1", first
    assert "host" not in first  # the reply names no host
    assert "error" in ask(tb, "h2", tb.ip("h1"))  # h1's own address serves no VM
    assert holds_address(tb, "h1", vm_ip)
    # one answer to ARP, with the VM's own MAC, not h1's
    assert arp_answers(tb, vm_ip) == [(vm_ip, mac_for(vm_ip))]

    out, stop = tb.folder / "client.jsonl", tb.folder / "stop"
    client = tb.popen("h5", [sys.executable, str(tb.folder / "client.py"), vm_ip, str(PORT),
                             str(out), str(stop)], log_name="vmaddr-client.log")
    moves = []
    try:
        time.sleep(1.0)
        src = "h1"
        # fixed chunks: a profile policy would copy the pace of this test's own client
        fixed = {"kind": "fixed", "size": 16384, "gap_s": 0.0}
        for req in ({"mode": "direct", "destination": "h4", "hide_destination": False},
                    {"mode": "stealth", "n": 2, "k": 2, "seed": 3, "destination": "h3"}):
            t0 = time.time()
            r = tb.mgmt({"op": "migrate", "source": src, "chunk_policy": fixed, **req})
            rec = wait_migration(tb, r["migration"], timeout=120)
            assert rec["state"] == "done", rec["result"]["reason"]
            dest = r["roles"]["destination"]
            assert tb.mgmt({"op": "status"})["vms"] == {"vm1": dest}
            after = ask(tb, "h2", vm_ip)
            assert after.get("vm") == "vm1" and after["counter"] > first["counter"], after
            assert "host" not in after
            assert "error" in ask(tb, "h2", tb.ip(dest))  # the new host's address serves no VM
            assert "error" in ask(tb, "h2", tb.ip(src))
            assert holds_address(tb, dest, vm_ip) and not holds_address(tb, src, vm_ip)
            assert arp_answers(tb, vm_ip) == [(vm_ip, mac_for(vm_ip))]
            resumed = rec["result"]["role_stats"][f"destination:{dest}"]["resumed_at"]
            flip = routed_at(tb, dest) - resumed
            assert -0.01 < flip < 2.0, flip  # routed after the VM runs there (log has ms)
            moves.append((req["mode"], src, dest, t0, time.time(), rec["result"], flip))
            first, src = after, dest
            time.sleep(1.0)
    finally:
        stop.touch()
        client.wait(10)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    counters = [r["counter"] for r in records if "counter" in r]
    assert len(counters) > 50, records[-5:]
    # one VM state throughout: every answer counts on from the one before, across both moves
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    for mode, src, dest, t0, t1, res, flip in moves:
        window = [r for r in records if t0 <= r["t0"] <= t1]
        gap, at = longest_gap(window)
        failed = sum("error" in r for r in window)
        print(f"\n{mode} {src}->{dest}: switch-over gap {gap * 1000:.0f} ms "
              f"(VM downtime {res['downtime_s'] * 1000:.0f} ms, address routed "
              f"{flip * 1000:.0f} ms after the VM resumed, migration "
              f"{res['migration_time_s']:.2f} s), {failed} of {len(window)} tries unanswered")
        assert gap < 5.0, (mode, gap)


def test_a_failed_migration_leaves_the_address_at_the_source(bed):
    from experiments.fleet import VMSpec, wait_migration

    tb = bed
    vm_ip = VMSpec("h1").ip
    src = tb.mgmt({"op": "status"})["vms"]["vm1"]
    dest = next(h["name"] for h in tb.description["hosts"]
                if not h["attacker"] and h["name"] != src)
    before = ask(tb, "h2", vm_ip)
    # 1 KiB chunks 50 ms apart cannot move 4 MiB in 3 s: the controller aborts the migration
    slow = {"kind": "fixed", "size": 1024, "gap_s": 0.05}
    r = tb.mgmt({"op": "migrate", "source": src, "mode": "direct", "destination": dest,
                 "hide_destination": False, "chunk_policy": slow, "timeout_s": 3})
    rec = wait_migration(tb, r["migration"], timeout=60)
    assert rec["state"] == "aborted" and "timed out" in rec["result"]["reason"], rec["result"]
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": src}
    after = ask(tb, "h2", vm_ip)
    assert after.get("vm") == "vm1" and after["counter"] > before["counter"], after
    assert holds_address(tb, src, vm_ip) and not holds_address(tb, dest, vm_ip)
    assert "error" in ask(tb, "h2", tb.ip(dest))
