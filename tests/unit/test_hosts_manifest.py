"""Bad manifests at the destination: the typed error, a failed migration, nothing written outside
the work folder. A real destination role on 127.0.0.x, fed by a test-held "leader" key."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, load_public, public_hex
from hosts.protocol.plan import DestinationView, Endpoint
from hosts.roles.base import AgentContext
from hosts.roles.destination import Destination, ManifestError, read_manifest
from hosts.vm import MAX_MIB
from hosts.wire import FrameType, build_frame, parse_frame, parse_text

MIB = 1 << 20
GOOD = {"vm": "vm1", "mib": 4, "page_size": 4096, "dirty_pages_per_s": 100.0, "seed": 5}

# (manifest, what the error names)
BAD: list[tuple[Any, str]] = [
    ({**GOOD, "vm": "../../../../tmp/x"}, "'vm'"),
    ({**GOOD, "vm": "/tmp/x"}, "'vm'"),
    ({**GOOD, "vm": "a/b"}, "'vm'"),
    ({**GOOD, "vm": ".."}, "'vm'"),
    ({**GOOD, "vm": "a..b"}, "'vm'"),
    ({**GOOD, "vm": ""}, "'vm'"),
    ({**GOOD, "vm": "x" * 65}, "'vm'"),
    ({**GOOD, "vm": "vm\x00"}, "'vm'"),
    ({**GOOD, "vm": "vm 1"}, "'vm'"),
    ({**GOOD, "vm": "vm\n1"}, "'vm'"),
    ({**GOOD, "vm": "vm\u00e91"}, "'vm'"),
    ({**GOOD, "vm": 7}, "'vm'"),
    ({**GOOD, "vm": None}, "'vm'"),
    ({**GOOD, "vm": ["vm1"]}, "'vm'"),
    ({k: v for k, v in GOOD.items() if k != "vm"}, "'vm'"),
    ({**GOOD, "mib": 5}, "exceeds the 4194304 bytes vouched"),  # oversized: 5 MiB > 4 MiB
    ({**GOOD, "mib": MAX_MIB + 1}, "'mib'"),
    ({**GOOD, "mib": 0}, "'mib'"),
    ({**GOOD, "mib": -4}, "'mib'"),
    ({**GOOD, "mib": "4"}, "'mib'"),
    ({**GOOD, "mib": 4.0}, "'mib'"),
    ({**GOOD, "mib": True}, "'mib'"),
    ({k: v for k, v in GOOD.items() if k != "mib"}, "'mib'"),
    ({**GOOD, "dirty_pages_per_s": "fast"}, "'dirty_pages_per_s'"),
    ({**GOOD, "dirty_pages_per_s": -1}, "'dirty_pages_per_s'"),
    ({**GOOD, "seed": "5"}, "'seed'"),
    ({**GOOD, "seed": -1}, "'seed'"),
    ([GOOD], "must be an object"),
    ("vm1", "must be an object"),
    (None, "must be an object"),
]


@pytest.mark.parametrize("manifest,names", BAD)
def test_a_bad_manifest_is_a_manifest_error_naming_the_field(manifest: Any, names: str) -> None:
    with pytest.raises(ManifestError, match=names):
        read_manifest(json.dumps(manifest).encode(), 4 * MIB)


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b""])
def test_a_manifest_that_is_no_json_is_a_manifest_error(body: bytes) -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(body, 4 * MIB)


def test_a_good_manifest_is_read_and_the_limit_is_inclusive() -> None:
    m = read_manifest(json.dumps(GOOD).encode(), 4 * MIB)
    assert (m.vm, m.mib, m.dirty_pages_per_s, m.seed) == ("vm1", 4, 100.0, 5)
    assert read_manifest(json.dumps({**GOOD, "vm": "A-b_c.9"}).encode(), 0).vm == "A-b_c.9"
    # 0: not vouched, only the VM model's own bound
    assert read_manifest(json.dumps({**GOOD, "mib": MAX_MIB}).encode(), 0).mib == MAX_MIB


def test_the_vm_address_must_be_the_one_the_controller_vouched() -> None:
    own = ("10.0.200.1", "02:00:0a:00:c8:01")
    with_nic = json.dumps({**GOOD, "ip": own[0], "mac": own[1]}).encode()
    assert read_manifest(with_nic, 4 * MIB, own).ip == own[0]
    assert read_manifest(json.dumps(GOOD).encode(), 4 * MIB, ("", "")).ip is None
    for vouched in (("", ""), ("10.0.200.2", own[1]), (own[0], "02:00:0a:00:c8:02")):
        with pytest.raises(ManifestError, match="the controller vouched"):
            read_manifest(with_nic, 4 * MIB, vouched)  # another VM's address, or one it has not
    with pytest.raises(ManifestError, match="the controller vouched"):
        read_manifest(json.dumps(GOOD).encode(), 4 * MIB, own)  # its address left behind


def _files(root: str) -> set[str]:
    out = set()
    for d, _, names in os.walk(root):
        out |= {os.path.join(d, n) for n in names}
    return out


class _Bed:
    """One destination role listening on 127.0.0.1 with its work folder deep in ``root``."""

    def __init__(self, root: str, max_image_bytes: int, mig: str = "m-bad") -> None:
        self.leader = X25519PrivateKey.generate()
        self.static = X25519PrivateKey.generate()
        self.workdir = os.path.join(root, "a", "b", "w")
        os.makedirs(self.workdir)
        self.reports: list[dict[str, Any]] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            vm_port = s.getsockname()[1]
        ctx = AgentContext(host="h6", ip="127.0.0.1", static=self.static, workdir=self.workdir,
                           vm_port=vm_port, report=self.reports.append)
        view = DestinationView(
            migration=mig, mode="stealth",
            me=Endpoint("h6", "127.0.0.1", "", 0, public_hex(self.static)),
            stall_timeout_s=5.0, peer_pubkey=public_hex(self.leader),
            max_image_bytes=max_image_bytes)
        self.role = Destination(ctx, view)
        self.port = self.role.prepare()["port"]
        self.mig = mig

    def send_manifest(self, manifest: Any, trailer: Any = None) -> str:
        """Send one manifest (and a trailer) as the leader would; the destination's ABORT reason."""
        ch = Channel.connect("127.0.0.1", "127.0.0.1", self.port,
                             load_public(public_hex(self.static)), self.leader, self.mig,
                             io_timeout=5.0)
        try:
            ch.send(build_frame(FrameType.MANIFEST, json.dumps(manifest).encode()))
            if trailer is not None:
                ch.send(build_frame(FrameType.TRAILER, json.dumps(trailer).encode()))
            reply = parse_frame(ch.recv())
        finally:
            ch.close()
        assert reply.type == FrameType.ABORT
        return parse_text(reply.body)


@pytest.mark.parametrize("manifest,names", BAD)
def test_the_destination_refuses_a_bad_manifest_and_writes_nothing(
    tmp_path, manifest: Any, names: str
) -> None:
    outside = tmp_path.parent / "tmp"  # where "../../../../tmp/x" points from the work folder
    before = _files(str(tmp_path.parent))
    bed = _Bed(str(tmp_path), max_image_bytes=4 * MIB)
    try:
        reason = bed.send_manifest(manifest)
        assert names.strip("'") in reason
        deadline = time.monotonic() + 5
        while not bed.reports and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bed.role.state == "failed"
        assert bed.reports and bed.reports[0]["op"] == "migration_failed"
        assert names.strip("'") in bed.reports[0]["reason"]
    finally:
        bed.role.close()
    assert _files(str(tmp_path.parent)) == before  # not a byte written, inside or outside
    assert not outside.exists() and not os.path.exists("/tmp/x.m-bad.mem")


def test_the_destination_installs_nothing_from_a_forged_sender(tmp_path) -> None:
    """Control: without the leader's key nobody gets a manifest in (refused at the handshake)."""
    bed = _Bed(str(tmp_path), max_image_bytes=4 * MIB)
    try:
        with pytest.raises(ChannelError):
            ch = Channel.connect("127.0.0.1", "127.0.0.1", bed.port,
                                 load_public(public_hex(bed.static)),
                                 X25519PrivateKey.generate(), bed.mig, io_timeout=5.0)
            ch.send(build_frame(FrameType.MANIFEST, json.dumps(GOOD).encode()))
            ch.recv()
        deadline = time.monotonic() + 5
        while not bed.role.stats["rejected"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bed.role.state == "prepared" and bed.role.stats["rejected"] >= 1
    finally:
        bed.role.close()
    assert os.listdir(bed.workdir) == []


def test_a_bad_migration_id_never_becomes_a_path(tmp_path) -> None:
    before = _files(str(tmp_path.parent))
    bed = _Bed(str(tmp_path), max_image_bytes=4 * MIB, mig="../../../../tmp/m")
    try:
        assert "migration id" in bed.send_manifest(GOOD)
    finally:
        bed.role.close()
    assert _files(str(tmp_path.parent)) == before


def test_the_listener_stops_on_close_and_a_closed_role_accepts_nothing(tmp_path) -> None:
    bed = _Bed(str(tmp_path), max_image_bytes=4 * MIB)
    stalled = [socket.create_connection(("127.0.0.1", bed.port)) for _ in range(3)]
    threading.Event().wait(0.3)  # let the accept loop take them into their handshake
    assert len(bed.role._pending) == 3
    bed.role.close()
    for s in stalled:  # closed by the role: EOF or reset, not a hang
        s.settimeout(3)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert bed.role._pending == set()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", bed.port), timeout=1).close()


@pytest.mark.parametrize("trailer,why", [
    ({"vm_bytes": 8 * MIB, "sha256": "00", "paused_at": 0}, "trailer says 8388608 image bytes"),
    ([1, 2], "trailer must be an object"),
    ({"vm_bytes": 4 * MIB}, "without the device state"),  # a stream cut before the end
])
def test_a_bad_trailer_fails_and_the_image_is_discarded(tmp_path, trailer: Any, why: str) -> None:
    bed = _Bed(str(tmp_path), max_image_bytes=4 * MIB)
    try:
        assert why in bed.send_manifest(GOOD, trailer)
        deadline = time.monotonic() + 5
        while not bed.reports and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bed.reports[0]["op"] == "migration_failed"
    finally:
        bed.role.close()
    assert os.listdir(bed.workdir) == []  # the incoming image was deleted
