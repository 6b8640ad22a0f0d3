"""Run inside a Mininet host by tests/mininet/test_mgmt_security.py: try every management op on
the controller's socket and every agent op on an agent's socket, by every path this process
might use, and print one JSON line with what happened to each try.

``python mgmt_probe.py CONTROLLER_SOCK AGENT_SOCK AGENT_HOST VIA_PID``: the direct paths, and the
same paths through ``/proc/VIA_PID/root`` (how a process in an attacker host could reach a
folder its own mount namespace hides). A try is signed with a key made up here (no run secret)
or sent unsigned.
"""

from __future__ import annotations

import json
import os
import sys

from hosts.protocol import auth, ops
from hosts.protocol.mgmt import MgmtError, call
from hosts.protocol.policy import AGENT_OPS, CONTROLLER_OPS

CONTROLLER_MSGS = {
    ops.STATUS: {},
    ops.REGISTER: {"host": "x1", "ip": "10.0.1.1", "agent": "/tmp/x.sock", "pubkey": "ab" * 32},
    ops.RELAY: {"migration": "evil", "hops": [{"from": "h1", "to": "h2", "port": 1}]},
    ops.RELAY_REMOVE: {"migration": "evil"},
    ops.FLOWS: {},
    ops.DEFAULTS: {"n": 1, "k": 1},
    ops.ANOMALY: {"host": "h1", "kind": "forged"},
    ops.MIGRATE: {"source": "h1", "leader": "h2", "faults": {"h1": {"record_key": "/tmp/k"}}},
    ops.MIGRATION_STATUS: {"migration": "m1"},
    ops.MIGRATIONS_ACTIVE: {},
    ops.MIGRATION_DONE: {"migration": "m1", "host": "h2"},
    ops.MIGRATION_FAILED: {"migration": "m1", "host": "h2", "reason": "forged"},
    ops.COVER_START: {"settings": {"rate_bytes_per_s": 1e6}},
    ops.COVER_STOP: {},
    ops.RESET_TRIAL: {"vm": "vm1", "host": "h2"},
}
AGENT_MSGS = {op: {"migration": "m1", "view": {}} for op in AGENT_OPS}


def attempt(path: str, msg: dict, cred: auth.Credential | None, server: str) -> str:
    try:
        r = call(path, msg, cred, server=server, timeout=5.0, check=False)
    except MgmtError as exc:
        text = str(exc)
        if "no management socket" in text:
            return "hidden"
        if "Permission denied" in text:
            return "denied"
        return f"unreachable: {text}"
    if r.get("ok"):
        return "ANSWERED " + json.dumps(r)[:200]
    return "refused: " + str(r.get("error"))[:200]


def main() -> None:
    ctl, agent, host, via = sys.argv[1:5]
    forged = {name: auth.Credential.from_secret(auth.new_secret(), name)
              for name in ("runner", "controller", f"agent:{host}", "test")}
    out: dict[str, object] = {"uid": os.getuid(), "listing": None, "tries": []}
    try:
        out["listing"] = os.listdir(os.path.dirname(os.path.dirname(ctl)))
    except OSError as exc:
        out["listing"] = f"{type(exc).__name__}"
    for prefix in ("", f"/proc/{via}/root"):
        for op in CONTROLLER_OPS:
            for cname, cred in (("unsigned", None), ("forged-runner", forged["runner"]),
                                ("forged-agent", forged[f"agent:{host}"])):
                msg = {"op": op, **CONTROLLER_MSGS.get(op, {})}  # refused before it is read
                out["tries"].append({"server": "controller", "op": op, "via": prefix or "path",
                                     "as": cname, "got": attempt(prefix + ctl, msg, cred,
                                                                 "controller")})
        for op in AGENT_OPS:
            for cname, cred in (("unsigned", None), ("forged-controller", forged["controller"])):
                msg = {"op": op, **AGENT_MSGS.get(op, {})}
                out["tries"].append({"server": f"agent:{host}", "op": op,
                                     "via": prefix or "path", "as": cname,
                                     "got": attempt(prefix + agent, msg, cred, f"agent:{host}")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
