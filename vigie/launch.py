"""Start a server process and wait until it is ready, without ever leaving it behind.

Used by the tests, the benchmarks and ``vigie sim`` alike (it was written three times). Two
promises:

- **No leak.** If the start fails (the process dies, or is not ready in time, or the caller is
  interrupted), the process is killed before the error is raised; and every process started
  here that is still running when the interpreter exits is killed then (``atexit``). A server
  left behind would load a shared machine for every later run.
- **A deadline that fits the machine.** How long a start may take is derived from the starts
  measured on this machine (a small JSON file in the temporary folder): ten times the slowest
  recent start, never under 180 s nor over 600 s (180 s when nothing was measured yet). A busy
  machine gets a wide margin; a broken start is still reported within minutes.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

FIRST_DEADLINE_S = 180.0
MIN_DEADLINE_S = 180.0
MAX_DEADLINE_S = 600.0
MARGIN = 10.0
KEPT_STARTS = 20
HISTORY_FILE = Path(tempfile.gettempdir()) / f"vigie-start-times-{os.getuid()}.json"

_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


class LaunchFailed(RuntimeError):
    """The process died or was not ready before its deadline (it has been killed)."""


def readiness_deadline_s(starts_s: Sequence[float]) -> float:
    """How long to wait for readiness, from recent measured start times."""
    if not starts_s:
        return FIRST_DEADLINE_S
    return min(MAX_DEADLINE_S, max(MIN_DEADLINE_S, MARGIN * max(starts_s[-KEPT_STARTS:])))


def recent_starts(path: Path = HISTORY_FILE) -> list[float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [float(x) for x in data if isinstance(x, int | float) and x >= 0][-KEPT_STARTS:]


def _record_start(duration_s: float, path: Path) -> None:
    starts = [*recent_starts(path), duration_s][-KEPT_STARTS:]
    with contextlib.suppress(OSError):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(starts), encoding="utf-8")
        tmp.replace(path)


def http_status(host: str, port: int, path: str = "/healthz", timeout_s: float = 2.0) -> int:
    """The status of ``GET http://host:port/path``, 0 when nothing answers.

    For readiness polls, which run every few tens of milliseconds while a server starts: plain
    ``http.client``, because an ``httpx.get`` builds a TLS context and loads the CA bundle on
    every call (tens of milliseconds of CPU each, taken from the server that is starting)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return int(response.status)
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    with _lock:
        _live.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    with _lock:
        left = list(_live)
    for proc in left:
        kill(proc)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (output appended to ``log_path``), killed at exit if still running."""
    log = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    finally:
        if log_path is not None and not isinstance(log, int):
            log.close()
    with _lock:
        _live.add(proc)
    return proc


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    deadline_s: float | None = None,
    history: Path = HISTORY_FILE,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Wait until ``ready()``; on any failure kill ``proc`` and raise. Returns the start time."""
    started = clock()
    limit = deadline_s if deadline_s is not None else readiness_deadline_s(recent_starts(history))
    try:
        while not ready():
            code = proc.poll()
            if code is not None:
                raise LaunchFailed(f"{what} s'est arrêté (code {code}) avant d'être prêt")
            if clock() - started > limit:
                raise LaunchFailed(f"{what} n'est pas prêt après {limit:.0f} s")
            sleep(0.05)
    except BaseException:
        kill(proc)
        raise
    took = clock() - started
    _record_start(took, history)
    return took


def launch(
    argv: Sequence[str],
    ready: Callable[[], bool],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    deadline_s: float | None = None,
    history: Path = HISTORY_FILE,
) -> subprocess.Popen[bytes]:
    """``spawn`` then ``wait_ready``: a running, ready process, or an error and no process."""
    proc = spawn(argv, env=env, cwd=cwd, log_path=log_path)
    wait_ready(proc, ready, what=what, deadline_s=deadline_s, history=history)
    return proc
