"""``python -m experiments.qemu_vs_model [--out PNG]``: the migration stream of the QEMU guest next
to the model's, read through the same paced link, as bytes over time with the rounds marked.

Both streams are drained at ``--rate`` MB/s (a reader that sleeps, as a paced relay does; QEMU
blocks on its socket, the model's generator waits): the model's pre-copy of a VM of the guest's
size and dirty rate, and QEMU's own pre-copy of the booted guest. No root, no Mininet; the QEMU
guest must be able to run here (``hosts.qemu.available``). Writes the plot and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from typing import Any

from experiments.fleet import VMSpec
from hosts import qemu
from hosts.vm import VM, precopy_records


def drain(stream: Iterable[bytes], rate: float, marks: list[float] | None = None
          ) -> list[tuple[float, int]]:
    """(seconds, cumulative bytes) as ``stream`` is read at ``rate`` bytes/s; for the model, a
    b"R" record (end of a round) appends its time to ``marks``."""
    t0 = time.monotonic()
    n = 0
    out = [(0.0, 0)]
    for chunk in stream:
        n += len(chunk)
        if marks is not None and chunk[:1] == b"R" and len(chunk) == 5:
            marks.append(time.monotonic() - t0)
        lag = n / rate - (time.monotonic() - t0)
        if lag > 0:
            time.sleep(lag)
        out.append((time.monotonic() - t0, n))
    return out


def run(rate_mb: float, mib: int, dirty_pages_per_s: float) -> dict[str, Any]:
    rate = rate_mb * 1e6
    res: dict[str, Any] = {"rate_mb_s": rate_mb, "mib": mib}
    with tempfile.TemporaryDirectory(prefix="stealth-qvm-") as d:
        os.chmod(d, 0o700)
        model = VM("model", os.path.join(d, "model.mem"), mib, port=_free_port(),
                   dirty_pages_per_s=dirty_pages_per_s)
        model.start()
        try:
            st: dict[str, Any] = {}
            marks: list[float] = []
            res["model"] = {"series": drain(precopy_records(model, stats=st), rate, marks),
                            "rounds_at": marks, "pages_per_round": st["pages_per_round"]}
        finally:
            model.destroy()
        guest = qemu.QemuVM("guest", d, mib, port=_free_port(),
                            dirty_kib=VMSpec("guest", dirty_pages_per_s=dirty_pages_per_s,
                                             kind="qemu").dirty_kib)
        guest.start(timeout=180)
        try:
            st = {}
            rounds: list[tuple[float, int]] = []
            t0 = time.monotonic()
            done = threading.Event()

            def watch() -> None:  # QEMU's dirty-sync count over time (its own thread: see
                last = 0  # QemuVM._force_stop)
                while not done.wait(0.1):
                    try:
                        assert guest.qmp is not None
                        c = int(guest.qmp.execute("query-migrate").get("ram", {})
                                .get("dirty-sync-count", 0))
                    except (qemu.QemuError, AssertionError):
                        return
                    if c > last:
                        rounds.append((time.monotonic() - t0, c))
                        last = c

            w = threading.Thread(target=watch, daemon=True)
            w.start()
            series = drain(guest.migrate_out(st), rate)
            done.set()
            w.join(5)
            res["qemu"] = {"series": series, "rounds_at": [t for t, _ in rounds],
                           "figures": st["qemu"], "forced": st.get("forced")}
        finally:
            guest.destroy()
    return res


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plot(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for key, colour, label in (("model", "tab:blue", "model (hosts.vm)"),
                               ("qemu", "tab:red", "QEMU guest (hosts.qemu)")):
        t, n = zip(*res[key]["series"], strict=True)
        ax.plot(t, [x / 1e6 for x in n], color=colour, label=label)
        for r in res[key]["rounds_at"]:
            ax.axvline(r, color=colour, alpha=0.3, linestyle="--")
    ax.set_xlabel("seconds since the migration started")
    ax.set_ylabel("MB of migration stream sent")
    ax.set_title(f"{res['mib']} MiB, read at {res['rate_mb_s']:g} MB/s; dashed: end of a "
                 "round (model) / a dirty sync (QEMU)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.qemu_vs_model", description=__doc__)
    ap.add_argument("--out", default="experiments/reference/qemu_vs_model.png")
    ap.add_argument("--rate", type=float, default=20.0, help="MB/s the streams are read at")
    ap.add_argument("--mib", type=int, default=96)
    ap.add_argument("--dirty-pages-per-s", type=float, default=200.0)
    a = ap.parse_args(argv)
    why = qemu.available()
    if why is not None:
        print(f"qemu_vs_model: the QEMU guest cannot run here: {why}")
        return 2
    res = run(a.rate, a.mib, a.dirty_pages_per_s)
    plot(res, a.out)
    summary = {k: {"bytes": res[k]["series"][-1][1], "seconds": res[k]["series"][-1][0],
                   "rounds": len(res[k]["rounds_at"])} for k in ("model", "qemu")}
    summary["qemu"]["figures"] = res["qemu"]["figures"]
    summary["model"]["pages_per_round"] = res["model"]["pages_per_round"]
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
