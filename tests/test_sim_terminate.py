"""`vigie sim load --spawn` stopped by SIGTERM (a service manager, `timeout`, a cancelled CI
job) stops the broker and the server it started: none is left running without its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import child_processes, process_alive

REPO = Path(__file__).resolve().parent.parent


def test_sigterm_stops_the_broker_and_server_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
    env.update(TMPDIR=str(tmp_path), VIGIE_GEO_DIR=os.environ.get("VIGIE_GEO_DIR", ""))
    out_path = tmp_path / "sim.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_server.cli", "sim", "load", "--spawn",
             "--devices", "2", "--hb-interval", "5", "--alert-rate", "0",
             "--duration", "600", "--drain", "5"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    children: dict[int, str] = {}
    try:
        # A deadline, not a measure: the spawned server's start on a busy machine.
        deadline = time.monotonic() + 300
        while "[charge" not in out_path.read_text(errors="replace"):
            assert proc.poll() is None, out_path.read_text(errors="replace")
            assert time.monotonic() < deadline, out_path.read_text(errors="replace")
            time.sleep(0.2)
        children = child_processes(proc.pid)
        commands = " ".join(children.values())
        assert "mosquitto" in commands and "alert_server.cli server" in commands, children
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        left = {pid: cmd for pid, cmd in children.items() if process_alive(pid)}
        assert not left, f"left running after SIGTERM: {left}"
    finally:
        # Never leave the test's own processes behind, whatever failed: the children are
        # looked up again (a failure may come before they were) before anything is killed.
        if proc.poll() is None:
            children.update(child_processes(proc.pid))
        for pid in [*children, proc.pid]:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)
