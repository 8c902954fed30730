"""The layers of Vigie, checked on the import graph (every import, also inside functions and
under ``TYPE_CHECKING``), computed from the source with ``ast``.

From the bottom up:

- ``vigie``: the protocol and the vocabulary; imports nothing of the project.
- ``dispatch``: the escalation engine; imports ``vigie`` only, never ``alert_server``.
- ``device_sim``: the simulator; imports ``vigie`` only (the protocol, not the server).
- ``alert_server``'s kernel (``settings``, ``db`` and its ``migration_heads`` check,
  ``metrics``): imported by everything above.
- the stages (``alerts``, ``devices``, ``geo``, ``ingest``, ``referents``, ``sessions``,
  ``users``, ``followup``): do not import one another; they talk through the pipeline, the
  vocabulary and small ports passed in. ``KNOWN_STAGE_IMPORTS`` lists the ones not yet undone:
  the list may only shrink (a new stage-to-stage import fails, and so does a listed one that
  is gone, so that the list is kept true).
- ``pipeline`` (and ``dispatch_bridge``, dispatch's hooks; ``retention``, the whole purge):
  the use cases, written out; may use every stage.
- the adapters: the console (``dashboard``), the phone app (``phoneapp``), the gateways of
  devices that already exist (``gateways``: OsmAnd over HTTP, MQTT buttons, both into the
  ingest writer) and each stage's HTTP router and commands (``<stage>/api.py``,
  ``<stage>/cli.py``), and the edge helpers they share (``audit``: who did what, from the API,
  console and commands; ``internal_access``: who may read /metrics and /docs; ``secret_input``:
  a secret typed or piped to a command; ``serving``: uvicorn's options); may use the pipeline
  and any stage.
- the composition: ``app`` (the one composition root), ``background``, ``cli`` (its
  ``lazy_cli`` loader of sub-commands, and ``broker_cli``, its ``vigie broker`` commands),
  ``demo``, ``demo_gateways`` (the demo's existing devices), ``models`` (every table),
  ``safety``, ``migrations``, ``logging_setup`` (the process's log handlers): build and wire
  everything.

No cycle between any two of these units.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vigie", "dispatch", "device_sim", "alert_server")
KERNEL = {"settings", "db", "metrics", "migration_heads"}
STAGES = {"alerts", "devices", "geo", "ingest", "referents", "sessions", "users", "followup"}
ADAPTER_MODULES = {"api", "cli"}
# Helpers of the entry points (HTTP, console, commands), shared by several adapters.
ADAPTER_HELPERS = {"audit", "internal_access", "secret_input", "serving"}
# Packages of alert_server that are entry points as a whole: the console, the phone app, the
# gateways (HTTP/MQTT into ingest/pipeline).
ADAPTER_PACKAGES = {"dashboard", "phoneapp", "gateways"}
# The use cases, and the alert server's side of dispatch's hooks beside them.
PIPELINE = {"pipeline", "dispatch_bridge", "retention"}
COMPOSITION = {
    "app",
    "background",
    "cli",
    "lazy_cli",
    "broker_cli",
    "demo",
    "demo_gateways",
    "models",
    "safety",
    "migrations",
    "logging_setup",
}

# Layer rank of each kind of unit: a unit may import units of its own rank or below only
# (stages: not even each other).
RANK = {
    "vigie": 0,
    "dispatch": 1,
    "device_sim": 1,
    "kernel": 2,
    "stage": 3,
    "pipeline": 4,
    "adapters": 5,
    "composition": 6,
}

# Stage-to-stage imports still to be undone (importer stage → imported stage).
KNOWN_STAGE_IMPORTS = {
    ("followup", "alerts"),
    ("followup", "devices"),
    ("followup", "geo"),
    ("followup", "ingest"),
    ("followup", "sessions"),
    ("ingest", "alerts"),
    ("ingest", "devices"),
    ("referents", "geo"),
    ("sessions", "alerts"),
    ("sessions", "devices"),
    ("sessions", "ingest"),
    ("users", "geo"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unit(module: str) -> str:
    """The unit a module belongs to: a top-level package, or a part of ``alert_server``."""
    parts = module.split(".")
    if parts[0] != "alert_server" or len(parts) == 1:
        return parts[0]
    if parts[1] in ADAPTER_PACKAGES:
        return f"adapters:{parts[1]}"
    if parts[1] in STAGES and len(parts) > 2 and parts[2] in ADAPTER_MODULES:
        return f"adapters:{parts[1]}"
    return f"alert_server.{parts[1]}"


def kind(u: str) -> str:
    if u.startswith("adapters:"):
        return "adapters"
    if not u.startswith("alert_server."):
        return u if u in RANK else "composition"
    name = u.split(".", 1)[1]
    if name in KERNEL:
        return "kernel"
    if name in STAGES:
        return "stage"
    if name in PIPELINE:
        return "pipeline"
    if name in ADAPTER_HELPERS:
        return "adapters"
    assert name in COMPOSITION, f"{u}: declare its layer in tests/test_architecture.py"
    return "composition"


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports (absolute and relative, at any depth)."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


@functools.cache
def import_graph() -> dict[tuple[str, str], set[str]]:
    """(importer unit, imported unit) → the importing modules."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            me = module_name(path)
            for target in imports_of(path):
                a, b = unit(me), unit(target)
                if a != b:
                    edges[(a, b)].add(me)
    return edges


def cycles(edges: dict[tuple[str, str], set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def stage_imports(edges: dict[tuple[str, str], set[str]]) -> set[tuple[str, str]]:
    return {
        (a.split(".")[1], b.split(".")[1])
        for a, b in edges
        if kind(a) == "stage" and kind(b) == "stage"
    }


def test_no_cycle_between_packages() -> None:
    assert cycles(import_graph()) == []


def test_vigie_imports_nothing_of_the_project() -> None:
    assert [e for e in import_graph() if e[0] == "vigie"] == []


def test_dispatch_never_imports_the_alert_server() -> None:
    bad = {e: m for e, m in import_graph().items() if e[0] == "dispatch" and e[1] != "vigie"}
    assert bad == {}


def test_the_simulator_uses_the_protocol_not_the_server() -> None:
    bad = {e: m for e, m in import_graph().items() if e[0] == "device_sim" and e[1] != "vigie"}
    assert bad == {}


def test_the_server_does_not_import_the_simulator_but_to_compose() -> None:
    bad = {
        e: m
        for e, m in import_graph().items()
        if e[1] == "device_sim" and kind(e[0]) != "composition"
    }
    assert bad == {}


def test_layers_only_import_downwards() -> None:
    bad = {e: sorted(m) for e, m in import_graph().items() if RANK[kind(e[0])] < RANK[kind(e[1])]}
    assert bad == {}


def test_stages_do_not_import_one_another() -> None:
    found = stage_imports(import_graph())
    assert found - KNOWN_STAGE_IMPORTS == set(), "a new stage-to-stage import"
    assert KNOWN_STAGE_IMPORTS - found == set(), "undone: remove it from KNOWN_STAGE_IMPORTS"


def test_the_graph_sees_imports_inside_functions_and_cycles() -> None:
    # The checks above would pass vacuously on an empty or blind graph.
    edges = import_graph()
    assert ("alert_server.pipeline", "alert_server.alerts") in edges
    assert ("alert_server.app", "vigie") in edges or ("alert_server.app", "dispatch") in edges
    assert cycles({("a", "b"): {"x"}, ("b", "c"): {"y"}, ("c", "a"): {"z"}}) == [["a", "b", "c"]]
    assert unit("alert_server.alerts.api") == "adapters:alerts"
    assert kind(unit("alert_server.geo.index")) == "stage"
    assert unit("alert_server.gateways.osmand") == "adapters:gateways"
