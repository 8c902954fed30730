"""A real ``vigie server`` with three consoles' live streams open stops promptly: every
stream ends on shutdown (a stream never finishes by itself, and uvicorn waits for open
responses), and answers are compressed on the way (GZip), the stream excepted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.dashboard.conftest import RestartableServer, http_login


def test_stop_with_three_consoles_open_ends_every_stream(
    console_server: RestartableServer, tmp_path: Path
) -> None:
    base = console_server.url
    ended: list[float] = []
    opened = threading.Barrier(4, timeout=60)

    def console() -> None:
        with (
            http_login(base, "regulation") as client,
            client.stream("GET", "/dashboard/stream", timeout=60) as r,
        ):
            assert r.status_code == 200
            assert "content-encoding" not in r.headers  # a stream is never buffered
            lines = r.iter_lines()
            while "event: hello" not in next(lines):
                pass
            opened.wait()
            try:
                for _ in lines:
                    pass
            except httpx.HTTPError:
                pass
        ended.append(time.monotonic())

    threads = [threading.Thread(target=console, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    opened.wait()

    with http_login(base, "regulation") as client:
        page = client.get("/dashboard/", headers={"Accept-Encoding": "gzip"})
        assert page.headers.get("content-encoding") == "gzip"
        js = client.get(page.text.split('src="')[1].split('"')[0])
        assert js.headers.get("content-encoding") == "gzip"

    started = time.monotonic()
    code = console_server.terminate()  # SIGTERM; waits for the process (30 s deadline)
    stopped = time.monotonic() - started
    for t in threads:
        t.join(30)
    # 0, or uvicorn re-raising the SIGTERM it handled after a clean shutdown.
    assert code in (0, -15), console_server.log()[-2000:]
    assert "Application shutdown complete" in console_server.log()
    assert len(ended) == 3  # every console saw its stream end
    # Measured, not asserted (a busy machine): the figure goes to the test's output.
    print(f"server stop with 3 consoles open: {stopped:.2f} s")
