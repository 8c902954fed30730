"""``vigie.launch``: a start that fails leaves no process behind, and the readiness deadline
follows the starts measured on the machine."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import process_alive
from vigie import launch

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_deadline_from_measured_starts() -> None:
    assert launch.readiness_deadline_s([]) == 180
    # Never under 180 s: a start measured fast on a quiet machine may take minutes on a busy one.
    assert launch.readiness_deadline_s([0.5, 1.0]) == 180
    assert launch.readiness_deadline_s([3.0, 25.0]) == 250  # ten times the slowest
    assert launch.readiness_deadline_s([90.0]) == 600  # never over 600 s
    # Only the recent starts count.
    assert launch.readiness_deadline_s([500.0] + [1.0] * launch.KEPT_STARTS) == 180


def test_a_start_that_is_never_ready_is_killed(tmp_path: Path) -> None:
    clock = iter(float(t) for t in range(1000))
    history = tmp_path / "starts.json"
    proc = launch.spawn(SLEEPER)
    with pytest.raises(launch.LaunchFailed, match="pas prêt après 5 s"):
        launch.wait_ready(
            proc,
            lambda: False,
            what="sleeper",
            deadline_s=5,
            history=history,
            clock=lambda: next(clock),
            sleep=lambda _s: None,
        )
    assert proc.poll() is not None and not process_alive(proc.pid)
    assert not history.exists()  # a failed start is not a measured start


def test_a_start_that_dies_is_reported_and_a_good_one_is_measured(tmp_path: Path) -> None:
    history = tmp_path / "starts.json"
    dead = launch.spawn([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(launch.LaunchFailed, match="code 3"):
        launch.wait_ready(dead, lambda: False, what="crasher", deadline_s=600, history=history)
    proc = launch.launch(SLEEPER, lambda: True, what="sleeper", history=history)
    try:
        assert len(launch.recent_starts(history)) == 1
    finally:
        launch.kill(proc)
    assert not process_alive(proc.pid)


def test_an_interrupted_start_is_killed(tmp_path: Path) -> None:
    proc = launch.spawn(SLEEPER)

    def interrupted() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch.wait_ready(proc, interrupted, what="sleeper", history=tmp_path / "h.json")
    assert not process_alive(proc.pid)


def test_a_process_still_running_at_exit_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import sys
        from vigie import launch
        proc = launch.spawn({SLEEPER!r})
        open({str(pid_file)!r}, "w").write(str(proc.pid))
        sys.exit(0)  # without stopping it: atexit must
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    pid = int(pid_file.read_text())
    assert not process_alive(pid)


def test_http_status_of_a_readiness_poll() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert launch.http_status("127.0.0.1", port) == 200
        assert launch.http_status("127.0.0.1", port, "/other") == 503
    finally:
        server.shutdown()
        server.server_close()
    # Nothing listening any more: 0, never an exception.
    assert launch.http_status("127.0.0.1", port, timeout_s=1) == 0
