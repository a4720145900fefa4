"""A thin link for transfer tests and benchmarks: a TCP proxy on 127.0.0.1 that
forwards to one address, limits each direction to ``rate`` bytes per second (one
token bucket per direction, shared by every connection, as one link is) and counts
the bytes it carried. ``lo`` itself is never shaped.

Usage::

    with ThrottledProxy("127.0.0.1", sshd_port, rate=12.5e6) as link:
        ... connect to 127.0.0.1:link.port ...
        link.bytes_up, link.bytes_down      # client -> server, server -> client

Threads, not asyncio: the proxy keeps forwarding while the code under test blocks
its own event loop (a subprocess, a killed client).
"""

from __future__ import annotations

import socket
import threading
import time


class _Bucket:
    """A token bucket: ``take(n)`` returns once ``n`` bytes may pass."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(rate / 20, 64 * 1024)  # 50 ms worth
        self.tokens = self.burst
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= min(n, self.burst):
                    self.tokens -= n
                    return
                wait = (min(n, self.burst) - self.tokens) / self.rate
            time.sleep(wait)


class ThrottledProxy:
    """See the module's docstring. ``rate`` 0: no limit (counting only)."""

    def __init__(self, host: str, port: int, rate: float = 0.0) -> None:
        self.target = (host, port)
        self.up = _Bucket(rate)
        self.down = _Bucket(rate)
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._count = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def total(self) -> int:
        return self.bytes_up + self.bytes_down

    def reset(self) -> None:
        with self._count:
            self.bytes_up = self.bytes_down = 0

    def start(self) -> ThrottledProxy:
        self._thread.start()
        return self

    def __enter__(self) -> ThrottledProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        try:
            self._sock.close()
        except OSError:
            pass
        for s in list(self._open):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._open.add(s)
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        bucket = self.up if up else self.down
        try:
            while data := src.recv(64 * 1024):
                bucket.take(len(data))
                dst.sendall(data)
                with self._count:
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                self._open.discard(s)
