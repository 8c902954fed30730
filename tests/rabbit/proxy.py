"""A TCP front for the devices, as a load balancer (HAProxy, a cloud LB) is in production: each
new connection goes to the next node that accepts it, so a device whose node died reconnects to
a live one. Threads copying bytes; enough for a test fleet of ~100 devices."""

from __future__ import annotations

import contextlib
import socket
import threading

from vigie.brokers.mosquitto import free_port


class TcpFront:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", self.port), backlog=512)
        self._sock.settimeout(0.2)
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="tcp-front", daemon=True)

    def start(self) -> TcpFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.close()

    def _connect_backend(self) -> socket.socket | None:
        for _ in range(len(self.backends)):
            with self._lock:
                port = self.backends[self._next % len(self.backends)]
                self._next += 1
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
        return None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        backend = self._connect_backend()
        if backend is None:
            client.close()
            return
        backend.settimeout(None)
        with self._lock:
            self._open.update((client, backend))
        t = threading.Thread(target=self._pipe, args=(backend, client), daemon=True)
        t.start()
        self._pipe(client, backend)
        t.join()
        with self._lock:
            self._open.difference_update((client, backend))

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side gone (a node killed, a device closing): close both, as a LB does.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
