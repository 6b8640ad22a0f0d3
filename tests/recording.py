"""Recording and replaying TCP hops for the wire tests: a relay that keeps every byte it
passes, and a replay of a recording on a fresh connection (loopback and unit tests share it)."""

from __future__ import annotations

import socket
import threading


def pipe(a: socket.socket, b: socket.socket, buf: bytearray, into: object = None) -> None:
    """Copy ``a`` to ``b`` until either end closes, keeping the bytes in ``buf`` (and, when
    ``into`` has ``lock`` and ``data``, in ``into.data`` too); then shut both ends."""
    lock = getattr(into, "lock", None)
    while True:
        try:
            d = a.recv(65536)
        except OSError:
            d = b""
        if not d:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        if lock is not None:
            with lock:
                into.data += d  # type: ignore[attr-defined]
                buf += d
        else:
            buf += d
        try:
            b.sendall(d)
        except OSError:
            return


class RecordingProxy:
    """A TCP relay in front of one receiver that keeps every byte it passes, both ways."""

    def __init__(self, ip: str, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(8)
        self.data = bytearray()  # everything, both ways
        self.streams: list[tuple[str, bytearray]] = []  # ("up" | "down", bytes) per connection
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, source_address=(addr[0], 0))
            except OSError:
                c.close()
                continue
            up, down = bytearray(), bytearray()
            self.streams += [("up", up), ("down", down)]
            threading.Thread(target=pipe, args=(c, u, up, self), daemon=True).start()
            threading.Thread(target=pipe, args=(u, c, down, self), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def replay(addr: tuple[str, int], data: bytes) -> bytes:
    """Send a recording on a new connection; return everything the receiver sent back.

    First its handshake part (message 1 and the first record), reading the answer until the
    receiver hangs up, then the rest if the receiver still takes it (a receiver that closes with
    unread bytes would reset the connection and could discard its answer).
    """
    cut = 4 + int.from_bytes(data[:4], "big")
    cut += 4 + int.from_bytes(data[cut : cut + 4], "big")
    got = bytearray()
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data[:cut])
        while True:
            try:
                d = s.recv(65536)
            except OSError:
                break
            if not d:
                break
            got += d
        try:
            s.sendall(data[cut:])
        except OSError:
            pass
    return bytes(got)
