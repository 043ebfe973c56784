"""A TCP proxy on 127.0.0.1 that can turn into a black hole: a real network partition.

``stall()`` stops forwarding in both directions without closing either socket:
bytes are simply no longer read, so each side's kernel buffers fill and its TCP
stays up, as when a cable is pulled or a firewall starts dropping packets (no
FIN, no RST, nothing). ``resume()`` forwards again whatever was held back;
``close()`` closes both sides of every connection (and the listener).
``drop_next = N`` closes (or resets) the next N connections as soon as they are
accepted, before any byte, as sshd does beyond its ``MaxStartups``.

Standard library only: one accept thread, and one pump thread per direction of
each connection.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time


class BlackHole:
    """Listens on ``127.0.0.1:port`` and forwards each connection to ``target``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.stalled_at: float | None = None  # time.monotonic() of the last stall()
        self.accepted = 0
        self.drop_next = 0  # connections still to drop on arrival...
        self.drop_with_reset = True  # ... with a reset (else a plain close)
        self.dropped = 0
        self._stalled = False
        self._closed = threading.Event()
        self._guard = threading.Lock()  # for the lists below
        self._sockets: list[socket.socket] = []
        self._pump_locks: list[threading.Lock] = []  # held while a chunk is in flight
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop, "blackhole-accept")

    # -- control ------------------------------------------------------------------------
    def stall(self) -> None:
        """Stop forwarding both ways; no socket is closed. Returns once no chunk is in flight."""
        self._stalled = True
        self.stalled_at = time.monotonic()
        with self._guard:
            locks = list(self._pump_locks)
        for lock in locks:  # wait out a chunk read before the flag was seen
            with lock:
                pass

    def resume(self) -> None:
        """Forward again, starting with what the kernel buffered meanwhile."""
        self._stalled = False

    def close(self) -> None:
        """Close the listener and both sides of every connection."""
        self._closed.set()
        with self._guard:
            sockets = [self.listener, *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the machinery ------------------------------------------------------------------
    def _start(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready = _readable(self.listener, 0.05)
                if not ready:
                    continue
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.drop_next > 0:
                self.drop_next -= 1
                self.dropped += 1
                if self.drop_with_reset:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._guard:
                self.accepted += 1
                self._sockets += [client, upstream]
                locks = threading.Lock(), threading.Lock()
                self._pump_locks += locks
            pair = _Pair(self, client, upstream)
            self._start(self._pump, "blackhole-up", client, upstream, locks[0], pair)
            self._start(self._pump, "blackhole-down", upstream, client, locks[1], pair)

    def _pump(self, source: socket.socket, sink: socket.socket, lock: threading.Lock, pair: _Pair) -> None:
        """Copy ``source`` to ``sink`` while not stalled; pass an EOF on as a half-close."""
        try:
            self._copy(source, sink, lock)
        finally:
            pair.done()

    def _forget(self, pair: _Pair) -> None:
        """Both directions of a connection ended: its sockets are closed (no descriptor kept)."""
        with self._guard:
            self._sockets = [s for s in self._sockets if s not in (pair.client, pair.upstream)]
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def _copy(self, source: socket.socket, sink: socket.socket, lock: threading.Lock) -> None:
        while not self._closed.is_set():
            if self._stalled:
                time.sleep(0.02)
                continue
            try:
                ready = _readable(source, 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            with lock:
                if self._stalled or self._closed.is_set():
                    continue  # leave the bytes unread: the black hole
                try:
                    data = source.recv(65536)
                    if not data:
                        with contextlib.suppress(OSError):
                            sink.shutdown(socket.SHUT_WR)
                        return
                    sink.sendall(data)
                except OSError:
                    return


class _Pair:
    """One proxied connection: its two sockets are closed once both directions have ended."""

    def __init__(self, hole: BlackHole, client: socket.socket, upstream: socket.socket) -> None:
        self.hole = hole
        self.client = client
        self.upstream = upstream
        self._left = 2
        self._lock = threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.hole._forget(self)


def _readable(sock: socket.socket, timeout: float) -> bool:
    """``sock`` has something to read (poll: no FD_SETSIZE limit, unlike select, for a proxy that
    outlives a thousand connections)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(timeout * 1000))
