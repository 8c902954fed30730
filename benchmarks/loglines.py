"""Lines per minute of a ``vigie server`` log (JSON lines, ``VIGIE_LOG_FORMAT=json``) over
given periods, and which kinds of line make them (issue #17: "measure lines per minute under
the load benchmark").

A line that is not JSON (a library printing on its own) is counted in the period of the JSON
line before it. Kinds group lines by logger and message with numbers and ``key=value`` values
blanked, so "button press device_id=b-1 alert_id=…" and "… device_id=b-2 …" are one kind.
"""

from __future__ import annotations

import collections
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any


def kind_of(record: dict[str, Any]) -> str:
    msg = str(record.get("msg", ""))
    msg = re.sub(r"=\S+", "=…", msg)
    msg = re.sub(r"\d+", "N", msg)
    return f"{record.get('level', '?')} {record.get('logger', '?')}: {msg[:90]}"


def read_log(path: Path) -> list[tuple[float, str]]:
    """(epoch seconds, kind) of every line, in order."""
    out: list[tuple[float, str]] = []
    last_t = 0.0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            last_t = datetime.fromisoformat(record["ts"]).timestamp()
            out.append((last_t, kind_of(record)))
        except (ValueError, KeyError, TypeError):
            out.append((last_t, f"(pas du JSON) {line[:90]}"))
    return out


def rates(
    lines: list[tuple[float, str]], periods: dict[str, tuple[float, float]], top: int = 8
) -> dict[str, dict[str, Any]]:
    """For each named period [start, end): lines, minutes, lines per minute, top kinds."""
    out: dict[str, dict[str, Any]] = {}
    for name, (start, end) in periods.items():
        inside = [kind for t, kind in lines if start <= t < end]
        minutes = max(end - start, 1e-9) / 60
        counts = collections.Counter(inside)
        out[name] = {
            "lines": len(inside),
            "minutes": round(minutes, 3),
            "per_minute": round(len(inside) / minutes, 2),
            "top": [[n, kind] for kind, n in counts.most_common(top)],
        }
    return out


def table(result: dict[str, dict[str, Any]]) -> str:
    rows = ["| period | minutes | lines | lines / min |", "|---|---|---|---|"]
    for name, r in result.items():
        rows.append(f"| {name} | {r['minutes']:.2f} | {r['lines']} | {r['per_minute']:.1f} |")
    return "\n".join(rows)
