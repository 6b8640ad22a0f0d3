"""The VM model: memory pages, device state, a running workload, a network service, pre-copy.

A ``VM`` is ``mib`` MiB of 4 KiB pages held in a file in the agent's work directory (read and
written with pread/pwrite, so the memory lives in the page cache, not in the agent's RSS),
plus device state (a small JSON dict), plus a workload thread that dirties pages at
``dirty_pages_per_s`` and a TCP service on ``(ip, port)`` that answers one JSON line
``{"vm": NAME, "host": HOST, "counter": N, "ticks": T}`` per connection; the counter is device
state, so it keeps counting across a migration. A VM given a ``hosts.vnic.VmNic`` answers at
an address and MAC of its own (added to its host with ``start``/``attach_nic``, taken away with
``stop``) and its reply does not name the host; without one it answers at its host's address.
(A little over 400 lines: the model, its pre-copy stream and the installer that reads that
stream back are one format, kept together.)

Migration traffic is real pre-copy (Clark et al., NSDI 2005): ``precopy_records`` yields all
pages, then the pages dirtied during the previous round, until the dirty set is small or a
round limit is hit, then pauses the VM and yields the rest plus the device state
(stop-and-copy). ``StreamInstaller`` applies that byte stream at the destination. The records::

    b"P" | count u32 | count page indices (u32) | count × 4096 bytes
    b"D" | length u32 | device state JSON
    b"R" | round u32                           (end of a pre-copy round)

A VM's name becomes part of a file name (``check_name``: letters, digits, ``.``, ``_``, ``-``,
1-64 characters, no ``..``), so a name from a manifest cannot point outside the work folder; an
image is at most ``MAX_MIB`` MiB.

Used by the source and destination roles (``hosts.roles.source``, ``hosts.roles.destination``)
and by the agent (``hosts.agent``), which runs its host's VM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hosts import vnic

PAGE = 4096
BATCH_PAGES = 64
BLOCK_PAGES = 16  # 64 KiB: the unit of the incremental image hash
_REC = struct.Struct(">cI")
MAX_MIB = 16384  # the largest image any VM may have (16 GiB), vouched or not
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

log = logging.getLogger(__name__)


class VMError(RuntimeError):
    """The VM or its migration stream is in a state that does not allow the request."""


class VMNameError(VMError):
    """A name that may not become part of a file name (a VM's, a migration's)."""


def check_name(name: object, what: str = "VM name") -> str:
    """``name`` if it is safe in a file name, else ``VMNameError`` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise VMNameError(
            f"{what} {name!r} is not 1-64 letters, digits, '.', '_' or '-' without '..'"
        )
    return name


def canonical(device: dict[str, Any]) -> bytes:
    return json.dumps(device, sort_keys=True, separators=(",", ":")).encode()


class VM(vnic.OwnAddress):
    """One VM: memory file, device state, workload and service. Thread-safe."""

    def __init__(
        self,
        name: str,
        mem_path: str,
        mib: int,
        host: str = "",
        ip: str = "127.0.0.1",
        port: int = 7000,
        dirty_pages_per_s: float = 0.0,
        seed: int = 0,
        fill: bool = True,
        device: dict[str, Any] | None = None,
        nic: vnic.VmNic | None = None,
    ) -> None:
        if not 1 <= mib <= MAX_MIB:
            raise VMError(f"a VM needs 1 to {MAX_MIB} MiB, got {mib}")
        self.name = check_name(name)
        self.mem_path = mem_path
        self.mib = mib
        self.pages = mib * 256
        self.size = self.pages * PAGE
        self.host = host
        self.nic = nic
        self.ip = nic.ip if nic is not None else ip
        self._nic_up = False
        self.port = port
        self.dirty_pages_per_s = dirty_pages_per_s
        self.seed = seed
        self.device: dict[str, Any] = device or {
            "name": name,
            "counter": 0,
            "ticks": 0,
            "vcpu": {"rip": 0xFFF0, "rsp": 0x7000, "cr3": 0x1000},
        }
        self.dirty = np.zeros(self.pages, dtype=np.uint8)
        nblocks = -(-self.pages // BLOCK_PAGES)
        self._hashes = [b""] * nblocks
        self._stale = np.ones(nblocks, dtype=bool)
        self._lock = threading.Lock()  # held by every guest action: a pause takes it away
        self._dirty_lock = threading.Lock()  # guards the dirty bitmap only
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.running = False
        os.makedirs(os.path.dirname(mem_path) or ".", exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW  # never write through a planted link
        self.fd = os.open(mem_path, flags, 0o600)
        if fill:
            self._fill()
        else:
            os.ftruncate(self.fd, self.size)

    # --- memory ---------------------------------------------------------------------
    def _fill(self) -> None:
        rng = np.random.default_rng(self.seed)
        block = 16 << 20
        off = 0
        while off < self.size:
            n = min(block, self.size - off)
            os.pwrite(self.fd, rng.bytes(n), off)
            off += n
        os.ftruncate(self.fd, self.size)

    def read_pages(self, indices: np.ndarray) -> bytes:
        """Concatenated contents of the given pages (runs of consecutive pages read at once)."""
        out = bytearray()
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return b""
        breaks = np.nonzero(np.diff(idx) != 1)[0] + 1
        for run in np.split(idx, breaks):
            out += os.pread(self.fd, len(run) * PAGE, int(run[0]) * PAGE)
        return bytes(out)

    def write_pages(self, indices: np.ndarray, data: bytes) -> None:
        """Write pages (runs of consecutive pages in one call)."""
        view = memoryview(data)
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return
        start = 0
        for brk in [*(np.nonzero(np.diff(idx) != 1)[0] + 1).tolist(), len(idx)]:
            os.pwrite(self.fd, view[start * PAGE : brk * PAGE], int(idx[start]) * PAGE)
            start = brk
        self._stale[idx // BLOCK_PAGES] = True

    def take_dirty(self) -> np.ndarray:
        """The pages dirtied since the last call, and clear them."""
        with self._dirty_lock:  # the workload thread marks pages concurrently
            idx = np.nonzero(self.dirty)[0]
            self.dirty[idx] = 0
        return idx.astype(np.uint32)

    def refresh_hashes(self) -> int:
        """Re-hash the 64 KiB blocks written since their last hash; returns how many."""
        todo = np.nonzero(self._stale)[0]
        for b in todo.tolist():
            self._stale[b] = False  # before reading: a racing write marks it again
            off = b * BLOCK_PAGES * PAGE
            data = os.pread(self.fd, min(BLOCK_PAGES * PAGE, self.size - off), off)
            self._hashes[b] = hashlib.sha256(data).digest()
        return len(todo)

    def digest(self) -> str:
        """The identity of the image: SHA-256 over the SHA-256 of every 64 KiB block of memory,
        then the device state. Blocks are hashed incrementally (``refresh_hashes``) so the
        hash at the pause costs only the blocks written since the last refresh."""
        self.refresh_hashes()
        h = hashlib.sha256()
        for x in self._hashes:
            h.update(x)
        h.update(canonical(self.device))
        return h.hexdigest()

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Run the workload and the service (on the VM's own address, attached first)."""
        if self.running:
            return
        self.attach_nic()
        self._stop.clear()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.ip, self.port))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._threads = [
            threading.Thread(target=self._workload, name=f"vm:{self.name}:work", daemon=True),
            threading.Thread(target=self._serve, name=f"vm:{self.name}:svc", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.running = True
        log.info(
            "vm=%s event=running host=%s service=%s:%d", self.name, self.host, self.ip, self.port
        )

    def pause(self) -> None:
        """Stop the guest (workload and service stall) until resume(); idempotent."""
        if not self._paused.is_set():
            self._lock.acquire()
            self._paused.set()

    def resume(self) -> None:
        if self._paused.is_set():
            self._paused.clear()
            self._lock.release()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        """Stop workload and service (the image stays)."""
        self._stop.set()
        was_paused = self.paused
        self.resume()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.detach_nic()  # the address goes with the service
        self.running = False
        if was_paused:
            self.pause()

    def destroy(self) -> None:
        """Stop and delete the image (the source's release)."""
        self.stop()
        self.resume()
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            os.unlink(self.mem_path)
        except FileNotFoundError:
            pass

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mib": self.mib,
            "running": self.running,
            "paused": self.paused,
            "counter": self.device.get("counter", 0),
            "service": f"{self.ip}:{self.port}",
            "mac": self.nic.mac if self.nic is not None else None,
        }

    # --- the guest ------------------------------------------------------------------
    def _workload(self) -> None:
        rng = np.random.default_rng(self.seed + 1)
        tick = 0.01
        carry = 0.0
        while not self._stop.is_set():
            time.sleep(tick)
            with self._lock:
                if self._stop.is_set():
                    return
                self.device["ticks"] = int(self.device.get("ticks", 0)) + 1
                carry += self.dirty_pages_per_s * tick
                n = int(carry)
                carry -= n
                if n <= 0:
                    continue
                pages = rng.integers(0, self.pages, size=n)
                noise = rng.bytes(64 * n)
                for j, p in enumerate(pages):
                    off = int(p) * PAGE + int(rng.integers(0, PAGE // 64)) * 64
                    os.pwrite(self.fd, noise[j * 64 : (j + 1) * 64], off)
                with self._dirty_lock:  # after the write: a racing copy re-sends next round
                    self.dirty[pages] = 1
                    self._stale[pages // BLOCK_PAGES] = True

    def _serve(self) -> None:
        assert self._listener is not None
        lst = self._listener
        while not self._stop.is_set():
            try:
                conn, _ = lst.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)  # a client that never reads cannot hold the service
                with self._lock:
                    if self._stop.is_set():  # stopped while paused: the image has moved on
                        continue
                    self.device["counter"] = int(self.device.get("counter", 0)) + 1
                    reply = {
                        "vm": self.name,
                        "counter": self.device["counter"],
                        "ticks": self.device.get("ticks", 0),
                    }
                    if self.nic is None:  # at its host's address the host is no secret
                        reply["host"] = self.host
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass


def ask_service(ip: str, port: int, timeout: float = 5.0) -> dict[str, Any]:
    """One request to a VM's service (what an outside client sees)."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        buf = b""
        while not buf.endswith(b"\n"):
            part = s.recv(4096)
            if not part:
                break
            buf += part
    return json.loads(buf)


# --- the migration stream -----------------------------------------------------------
def page_records(vm: VM, indices: np.ndarray) -> Iterator[bytes]:
    for i in range(0, len(indices), BATCH_PAGES):
        batch = np.asarray(indices[i : i + BATCH_PAGES], dtype=np.uint32)
        yield _REC.pack(b"P", len(batch)) + batch.astype(">u4").tobytes() + vm.read_pages(batch)


def precopy_records(
    vm: VM,
    max_rounds: int = 8,
    min_dirty_pages: int | Callable[[], int] = 64,
    stats: dict[str, Any] | None = None,
) -> Iterator[bytes]:
    """Pre-copy rounds, then stop-and-copy; the VM is paused when the generator ends.

    The VM pauses once a round leaves at most ``min_dirty_pages`` dirty (a callable is asked
    after every round: the source's transport may set it from what it measured), or after
    ``max_rounds``. ``stats`` is filled with ``rounds``, ``pages_per_round`` and ``paused_at``
    (time.time()).
    """
    st = stats if stats is not None else {}
    st["pages_per_round"] = []
    vm.take_dirty()  # start tracking from a clean slate
    todo = np.arange(vm.pages, dtype=np.uint32)
    rnd = 0
    while True:
        st["pages_per_round"].append(int(len(todo)))
        yield from page_records(vm, todo)
        yield _REC.pack(b"R", rnd)  # end of a round: the destination hashes what it has
        rnd += 1
        todo = vm.take_dirty()
        few = min_dirty_pages() if callable(min_dirty_pages) else min_dirty_pages
        if len(todo) <= few or rnd >= max_rounds:
            break
    vm.refresh_hashes()  # hash what is unchanged while the VM still runs
    vm.pause()
    st["paused_at"] = time.time()
    todo = np.union1d(todo, vm.take_dirty()).astype(np.uint32)  # what the last round left too
    st["pages_per_round"].append(int(len(todo)))
    st["rounds"] = rnd + 1  # pre-copy rounds plus the stop-and-copy
    yield from page_records(vm, todo)
    dev = canonical(vm.device)
    yield _REC.pack(b"D", len(dev)) + dev


class StreamInstaller:
    """Applies a migration stream to an incoming VM image at the destination (incremental)."""

    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self.buf = bytearray()
        self.pages_written = 0
        self.device: dict[str, Any] | None = None
        self.last_round_at: float | None = None  # time.time() the last round's end came in

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            if len(self.buf) < _REC.size:
                return
            kind, n = _REC.unpack_from(self.buf)
            if kind == b"P":
                if n > BATCH_PAGES * 16:
                    raise VMError(f"page record of {n} pages")
                need = _REC.size + 4 * n + PAGE * n
                if len(self.buf) < need:
                    return
                idx = np.frombuffer(bytes(self.buf[_REC.size : _REC.size + 4 * n]), dtype=">u4")
                if n and int(idx.max()) >= self.vm.pages:
                    raise VMError(f"page {int(idx.max())} beyond a {self.vm.pages}-page VM")
                self.vm.write_pages(idx, bytes(self.buf[_REC.size + 4 * n : need]))
                self.pages_written += n
            elif kind == b"R":
                need = _REC.size
                self.vm.refresh_hashes()
                self.last_round_at = time.time()
            elif kind == b"D":
                if n > 1 << 20:
                    raise VMError(f"device state of {n} bytes")
                need = _REC.size + n
                if len(self.buf) < need:
                    return
                try:
                    self.device = json.loads(bytes(self.buf[_REC.size : need]))
                except ValueError as exc:
                    raise VMError(f"device state is not JSON: {exc}") from None
            else:
                raise VMError(f"unknown record kind {kind!r}")
            del self.buf[:need]

    def finish(self) -> None:
        if self.buf:
            raise VMError(f"{len(self.buf)} bytes of an unfinished record at the end of the stream")
        if self.device is None:
            raise VMError("the stream ended without the device state")
        self.vm.device = self.device
