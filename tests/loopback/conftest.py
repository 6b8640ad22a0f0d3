"""Fixtures of the loopback tests: agents as real processes on 127.0.0.x, a stand-in controller."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pytest

from experiments.loopback import LoopbackBed

# a random 127.a.b.0/24 per test session: two sessions (say, CI and a developer) running these
# tests at once must not fight over the same addresses and the VM's service port
NET = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}."
SOURCE_IP = f"{NET}11"
HOSTS = {
    "h1": SOURCE_IP,
    "h2": f"{NET}12",
    "h3": f"{NET}13",
    "h4": f"{NET}14",
    "h5": f"{NET}15",
    "h6": f"{NET}16",
    "h7": f"{NET}17",
}


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def seven_agents(tmp_path, dirty_pages_per_s: int) -> Iterator[LoopbackBed]:
    """h1 runs vm1 (4 MiB, ``dirty_pages_per_s``); h2..h7 run no VM; the test-only fault switch
    is on. Closed at the end, and no agent may have logged a traceback."""
    b = LoopbackBed(str(tmp_path / "bed"), test_faults=True)
    try:
        b.add_agent("h1", SOURCE_IP, vm="vm1", vm_mib=4, dirty_pages_per_s=dirty_pages_per_s,
                    seed=5, wait=False)
        for h, ip in HOSTS.items():
            if h != "h1":
                b.add_agent(h, ip, wait=False)
        b.wait_registered(list(HOSTS))
        yield b
    finally:
        b.close()
        for h in HOSTS:
            log = os.path.join(b.root, f"{h}.log")
            if os.path.exists(log):
                with open(log) as f:
                    text = f.read()
                assert "Traceback" not in text, f"{h} logged a traceback:\n{text[-3000:]}"


@pytest.fixture()
def bed(tmp_path) -> Iterator[LoopbackBed]:
    """h1 runs vm1 (4 MiB, 200 dirty pages/s); h2..h7 run no VM. The agents have the test-only
    fault switch on (the fault tests need it)."""
    yield from seven_agents(tmp_path, 200)
