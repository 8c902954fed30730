"""Many paho clients driven by a few threads, through paho's external event loop API.

``loop_start()`` costs one thread per client: 10,000 simulated devices would be 10,000 threads
(8 MiB of virtual stack each, and a GIL hand-off storm). Instead each ``Shard`` is one thread
with one ``selectors`` selector (epoll on Linux) over its clients' sockets:

- ``on_socket_open`` / ``on_socket_close``: (un)register the socket for reading;
- ``on_socket_register_write`` / ``on_socket_unregister_write``: add/remove write interest
  when paho has bytes it could not send at once;
- readable → ``loop_read()``, writable → ``loop_write()``, and ``loop_misc()`` about once a
  second per client (keepalive pings, connection timeouts).

Everything that touches a client runs on its shard's thread: other threads hand work over
with ``call_soon``/``call_later`` (paho is not safe to drive from two threads without its own
loop thread). Timers are a heap per shard; the lateness of each timer is recorded, so a load
report can tell whether the simulator itself kept up.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0


class TimerHandle:
    __slots__ = ("args", "cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def set_nodelay(sock: Any) -> None:
    """No Nagle: without it every small MQTT packet may wait ~40 ms for the peer's ACK."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Shard:
    """One thread, one selector, any number of paho clients."""

    def __init__(self, name: str = "sim-shard") -> None:
        self.name = name
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._clients: list[mqtt.Client] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # Timer lateness (s): how far behind schedule the shard runs.
        self.lag_max_s = 0.0
        self.lag_samples: deque[float] = deque(maxlen=10_000)

    # -- any thread ------------------------------------------------------------------------
    def start(self) -> Shard:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._calls.append((fn, args))
        if not self.in_thread():
            self._wake()

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        handle = TimerHandle(time.monotonic() + max(0.0, delay_s), fn, args)
        with self._lock:
            earliest = self._timers[0][0] if self._timers else float("inf")
            heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        if handle.when < earliest and not self.in_thread():
            self._wake()
        return handle

    def run_sync(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 10.0) -> Any:
        """Run ``fn`` on the shard's thread and return its result (for tests and tools)."""
        if self.in_thread():
            return fn(*args)
        done = threading.Event()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        self.call_soon(call)
        if not done.wait(timeout_s):
            raise TimeoutError(f"{self.name}: call did not run within {timeout_s}s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    # -- shard thread: paho's external-loop callbacks --------------------------------------
    def attach(self, client: mqtt.Client) -> None:
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._clients.append(client)

    def detach(self, client: mqtt.Client) -> None:
        with contextlib.suppress(ValueError):
            self._clients.remove(client)
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(sock)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        set_nodelay(sock)
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.modify(sock, selectors.EVENT_READ, client)

    # -- shard thread: the loop ------------------------------------------------------------
    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_INTERVAL_S
        misc_pos = 0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                timeout = next_misc - now
                if self._timers:
                    timeout = min(timeout, self._timers[0][0] - now)
                if self._calls:
                    timeout = 0.0
            try:
                events = self.selector.select(max(0.0, timeout))
            except OSError:
                log.exception("%s: select failed", self.name)
                events = []
            for key, mask in events:
                client = key.data
                if client is None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_r.recv(4096)
                    continue
                self._guard(self._io, client, mask)
            self._run_calls()
            self._run_timers()
            now = time.monotonic()
            if now >= next_misc:
                # Keepalive bookkeeping for every client, spread so that 10,000 clients do not
                # all run in the same tick.
                n = len(self._clients)
                batch = max(1, n // 4)
                for client in self._clients[misc_pos : misc_pos + batch]:
                    self._guard(client.loop_misc)
                misc_pos = misc_pos + batch if misc_pos + batch < n else 0
                next_misc = now + MISC_INTERVAL_S / 4
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _io(self, client: mqtt.Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            client.loop_read()
        if mask & selectors.EVENT_WRITE and client.socket() is not None:
            client.loop_write()

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, deque()
        for fn, args in calls:
            self._guard(fn, *args)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            lag = now - handle.when
            self.lag_samples.append(lag)
            self.lag_max_s = max(self.lag_max_s, lag)
            self._guard(handle.fn, *handle.args)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        # One device's bug must not stop the 2,000 others on this thread.
        try:
            fn(*args)
        except Exception:
            log.exception("%s: callback failed", self.name)


class Reactor:
    """A few shards; devices are spread over them round-robin."""

    def __init__(self, shards: int = 1) -> None:
        self.shards = [Shard(f"sim-shard-{i}") for i in range(max(1, shards))]
        self._next = itertools.cycle(self.shards)

    def start(self) -> Reactor:
        for s in self.shards:
            s.start()
        return self

    def stop(self) -> None:
        for s in self.shards:
            s.stop()

    def pick(self) -> Shard:
        return next(self._next)

    def reset_lag(self) -> None:
        for s in self.shards:
            s.lag_samples.clear()
            s.lag_max_s = 0.0

    def lag_summary(self) -> dict[str, float]:
        # deque.copy() runs in C under the GIL: a snapshot while the shard threads append
        # (iterating the deque itself raises "deque mutated during iteration").
        samples = sorted(x for s in self.shards for x in s.lag_samples.copy())
        if not samples:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {
            "p50_ms": samples[len(samples) // 2] * 1000,
            "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
            "max_ms": max(s.lag_max_s for s in self.shards) * 1000,
        }
