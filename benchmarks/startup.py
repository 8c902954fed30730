"""Start-up times a person waits for: ``vigie --help``, light commands (``vigie devices list``,
``vigie users list``), ``vigie server`` until ``/healthz`` answers 200, ``vigie demo`` until it
prints the console URL (first and second run).

Each is run as a person runs it, a fresh process each time, repeated; the median and p90 are
reported with the best and the worst. Beside them, the floors on this machine in the same run:
the bare interpreter (``python -c pass``) for the commands, and a bare FastAPI app served by
uvicorn (start → first 200) for the server.

    uv run python benchmarks/startup.py [--repeat 7] [--cold-repeat 2] [--demo-rounds 2]
                                        [--checkout DIR] [--json out.json]

``--checkout DIR`` measures the code of another checkout (an older commit, for a before/after
comparison in one session) with this environment's packages: ``python -m alert_server.cli``
with ``DIR`` first on ``PYTHONPATH``.

Server starts, three cases (SQLite, boundaries from ``VIGIE_GEO_DIR``):

- ``restart``: the database already holds the boundaries (every start after the first);
- ``first, parse cache warm``: a new database, the checked boundary files already in the parse
  cache (``$XDG_CACHE_HOME/vigie/geo``): what a demo's second run pays;
- ``first, cold``: a new database and an empty parse cache: the GeoJSON is parsed and checked.

The demo: ``--demo-rounds`` rounds of a first run (empty parse cache) and a second run (the
same cache), each its own database as the demo always has.

Every run finds Python's bytecode compiled, as a normal installation has it: it is compiled
first into the temporary folder (``PYTHONPYCACHEPREFIX``), even when the environment sets
``PYTHONDONTWRITEBYTECODE`` (which would make every run recompile every module it imports).
Needs ``mosquitto``; the server and demo cases need ``VIGIE_GEO_DIR`` (skipped without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vigie.brokers.mosquitto import LocalMosquitto, free_port  # noqa: E402


def _vigie() -> list[str]:
    """The ``vigie`` command of this environment (its console script), as a person runs it."""
    script = Path(sys.executable).parent / "vigie"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "alert_server.cli"]


VIGIE = _vigie()
CODE = REPO  # the checkout whose code is measured (--checkout)

# A FastAPI app answering /healthz, served by uvicorn: the floor of `vigie server`.
BARE_SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def stats(xs: list[float], cpu: list[float] | None = None) -> dict[str, Any]:
    """Median, p90 (nearest rank), best and worst of ``xs`` seconds; with ``cpu``, the median
    CPU seconds (user + system) the processes used to get there, which a busy machine changes
    far less than the wall time."""
    ordered = sorted(xs)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    extra = {"cpu_median_s": statistics.median(cpu), "cpu_runs_s": cpu} if cpu else {}
    return {
        **extra,
        "n": len(xs),
        "median_s": statistics.median(xs),
        "p90_s": p90,
        "best_s": ordered[0],
        "worst_s": ordered[-1],
        "runs_s": xs,
        "loadavg": os.getloadavg()[0],
    }


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its living descendants (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        # utime, stime, and those of its children already reaped
        times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, parent in parents.items() if parent == p and c not in tree]
    return sum(times.get(p, 0.0) for p in tree)


def time_command(argv: list[str], env: dict[str, str], repeat: int) -> dict[str, Any]:
    out, cpu = [], []
    for _ in range(repeat):
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(argv, env=env, cwd=CODE, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
    return stats(out, cpu)


def _stop(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def time_until_healthy(
    argv: Callable[[int], list[str]], env: dict[str, str]
) -> tuple[float, float]:
    """Seconds from the process start to its first ``/healthz`` 200, and the CPU seconds it
    used to get there; the process is stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv(port),
        env=env,
        cwd=CODE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(timeout=2) as client:
            while time.perf_counter() - t0 < 300:
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - t0, _tree_cpu(proc.pid)
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"{argv(port)} exited ({proc.returncode}): {err[-2000:]}")
                time.sleep(0.01)
        raise RuntimeError(f"{argv(port)}: /healthz not 200 after 300 s")
    finally:
        _stop(proc, 30)
        if proc.stderr is not None:
            proc.stderr.close()


def time_servers(
    env_for_run: Callable[[int], dict[str, str]], repeat: int, argv: Callable[[int], list[str]]
) -> dict[str, Any]:
    runs = [time_until_healthy(argv, env_for_run(i)) for i in range(repeat)]
    return stats([w for w, _ in runs], [c for _, c in runs])


def time_demo(env: dict[str, str]) -> tuple[float, float]:
    """Seconds from ``vigie demo`` to the line with the console's URL, and the CPU seconds the
    demo and its processes (server, broker) used to get there; the demo is stopped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*VIGIE, "demo", "--port", str(free_port())],
        env=env,
        cwd=CODE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "Console :" in line:
                return time.perf_counter() - t0, _tree_cpu(proc.pid)
        raise RuntimeError("demo exited before printing its URL:\n" + "".join(seen[-30:]))
    finally:
        _stop(proc, 60)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs of each quick case")
    ap.add_argument(
        "--cold-repeat", type=int, default=2, help="runs of each first-start case (new database)"
    )
    ap.add_argument(
        "--demo-rounds", type=int, default=2, help="rounds of a first and a second demo run"
    )
    ap.add_argument(
        "--pycache",
        type=Path,
        help="keep the compiled bytecode in this folder (reused by later runs) rather than in "
        "the temporary one",
    )
    ap.add_argument("--checkout", type=Path, help="measure the code of this other checkout")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    global VIGIE, CODE
    if args.checkout is not None:
        CODE = args.checkout.resolve()
        if not (CODE / "alert_server" / "cli.py").is_file():
            ap.error(f"--checkout: {CODE} is not a checkout of Vigie")
        VIGIE = [sys.executable, "-m", "alert_server.cli"]
    if args.repeat < 1 or args.cold_repeat < 0 or args.demo_rounds < 0:
        ap.error("--repeat ≥ 1, --cold-repeat ≥ 0, --demo-rounds ≥ 0")
    geo_dir = os.environ.get("VIGIE_GEO_DIR")
    result: dict[str, Any] = {
        "config": {
            "repeat": args.repeat,
            "cold_repeat": args.cold_repeat,
            "demo_rounds": args.demo_rounds,
            "geo_dir": geo_dir,
            "vigie": VIGIE,
            "code": str(CODE),
        },
        "loadavg_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="vigie-startup-") as tmp:
        broker = LocalMosquitto(Path(tmp) / "broker").start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIE_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if CODE != REPO:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(CODE), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        env.update(
            PYTHONPYCACHEPREFIX=str(args.pycache or Path(tmp) / "pycache"),
            XDG_CACHE_HOME=str(Path(tmp) / "cache"),
            VIGIE_DATABASE_URL=f"sqlite:///{tmp}/vigie.db",
            VIGIE_MQTT_URL=broker.server_url(),
            VIGIE_BROKER_PASSWD_FILE=str(broker.passwd_file),
            VIGIE_BROKER_ACL_FILE=str(broker.acl_file),
            VIGIE_SECRET_KEY=secrets.token_hex(32),
            VIGIE_TELEPHONY="simulated",
            VIGIE_LOG_FORMAT="plain",
        )
        try:
            measure(args, env, geo_dir, Path(tmp), result)
        finally:
            broker.stop()
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def compile_bytecode(env: dict[str, str]) -> None:
    """Compile the project and its installed packages into ``PYTHONPYCACHEPREFIX``."""
    import sysconfig

    paths = sysconfig.get_paths()
    # The standard library too: with a prefix, Python looks for all its bytecode there.
    folders = [paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]]
    folders += [str(CODE / p) for p in ("alert_server", "dispatch", "device_sim", "vigie")]
    subprocess.run(
        [
            *(sys.executable, "-m", "compileall", "-q", "-j", "2"),
            *("-x", r"/(tests?|idlelib|lib2to3|tkinter|ensurepip|turtledemo)/"),
            *sorted(set(folders)),
        ],
        env=env,
        check=False,  # a test file of some package that does not compile is not our concern
        stdout=subprocess.DEVNULL,
    )


def _say(text: str) -> None:
    print(f"startup: {text} (load {os.getloadavg()[0]:.2f})", flush=True)


def measure(
    args: argparse.Namespace, env: dict[str, str], geo_dir: str | None, tmp: Path, result: Any
) -> None:
    py = [sys.executable]
    t0 = time.perf_counter()
    compile_bytecode(env)
    result["compile_bytecode_s"] = time.perf_counter() - t0
    _say(f"bytecode compiled in {result['compile_bytecode_s']:.0f} s")
    result["python_floor"] = time_command([*py, "-c", "pass"], env, args.repeat)
    subprocess.run([*VIGIE, "--help"], env=env, cwd=CODE, check=True, capture_output=True)
    result["help"] = time_command([*VIGIE, "--help"], env, args.repeat)
    _say(f"--help {result['help']['median_s']:.2f} s")
    # The first one creates and migrates the database.
    subprocess.run([*VIGIE, "devices", "list"], env=env, cwd=CODE, check=True, capture_output=True)
    result["devices_list"] = time_command([*VIGIE, "devices", "list"], env, args.repeat)
    subprocess.run([*VIGIE, "users", "list"], env=env, cwd=CODE, check=True, capture_output=True)
    result["users_list"] = time_command([*VIGIE, "users", "list"], env, args.repeat)
    _say(f"devices list {result['devices_list']['median_s']:.2f} s")

    def bare(port: int) -> list[str]:
        return [*py, "-c", BARE_SERVER, str(port)]

    time_servers(lambda _i: env, 1, bare)
    result["bare_server"] = time_servers(lambda _i: env, args.repeat, bare)
    if not geo_dir:
        result["skipped"] = "VIGIE_GEO_DIR not set: no server or demo figures"
        return

    def server(port: int) -> list[str]:
        return [*VIGIE, "server", "--port", str(port)]

    shared_cache = str(tmp / "cache")
    served = dict(env, VIGIE_GEO_DIR=geo_dir, XDG_CACHE_HOME=shared_cache)
    # The first start imports the boundaries into the database (and fills the parse cache).
    result["first_start_unmeasured_s"] = time_until_healthy(server, served)[0]
    result["server_restart"] = time_servers(lambda _i: served, args.repeat, server)
    _say(f"server restart {result['server_restart']['median_s']:.2f} s")

    def fresh(cache: str | None) -> Callable[[int], dict[str, str]]:
        def env_for(i: int) -> dict[str, str]:
            db = tmp / f"first-{secrets.token_hex(4)}.db"
            return dict(
                served,
                VIGIE_DATABASE_URL=f"sqlite:///{db}",
                XDG_CACHE_HOME=cache or str(tmp / f"cold-cache-{secrets.token_hex(4)}"),
            )

        return env_for

    if args.cold_repeat:
        result["server_first_warm_cache"] = time_servers(
            fresh(shared_cache), args.cold_repeat, server
        )
        result["server_first_cold"] = time_servers(fresh(None), args.cold_repeat, server)
        _say(
            f"server first start, warm / cold parse cache "
            f"{result['server_first_warm_cache']['median_s']:.2f} / "
            f"{result['server_first_cold']['median_s']:.2f} s"
        )
    if args.demo_rounds:
        if shutil.which("mosquitto") is None:
            result["skipped"] = "mosquitto not installed: no demo figures"
            return
        first, second = [], []
        for i in range(args.demo_rounds):
            demo_env = {k: v for k, v in env.items() if not k.startswith("VIGIE_")}
            demo_env.update(VIGIE_GEO_DIR=geo_dir, XDG_CACHE_HOME=str(tmp / f"demo-cache-{i}"))
            first.append(time_demo(demo_env))
            second.append(time_demo(demo_env))
            _say(f"demo round {i + 1}: first {first[-1][0]:.2f} s, second {second[-1][0]:.2f} s")
        result["demo_first"] = stats([w for w, _ in first], [c for _, c in first])
        result["demo_second"] = stats([w for w, _ in second], [c for _, c in second])


if __name__ == "__main__":
    sys.exit(main())
