"""The départements Vigie covers: their INSEE codes, how a commune code maps to its
département, their order, and the two forces that cover them.

Words shared by the boundaries (``geo``), the referent directory (``referents``), the console
accounts (``users``) and the console: here, below all of them, so that none imports another.
"""

from __future__ import annotations

import re

# "01".."95" without "20" (Corsica is "2A"/"2B" since 1976), then the five DROM. The COM
# (975, 977, 978, 98x) are outside the protocol's scope and have no boundary data here.
DEPARTEMENT_CODES: frozenset[str] = frozenset(
    [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B", "971", "972", "973", "974", "976"]
)

# INSEE commune code: 5 characters; Corsica uses 2A/2B instead of 20.
COMMUNE_CODE_RE = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")

FORCES: tuple[str, ...] = ("PN", "GN")  # police nationale, gendarmerie nationale


def is_departement_code(code: str) -> bool:
    return code in DEPARTEMENT_CODES


def is_commune_code(code: str) -> bool:
    return bool(COMMUNE_CODE_RE.match(code))


def departement_of_commune(code: str) -> str:
    """``"13055"`` → ``"13"``, ``"2A004"`` → ``"2A"``, ``"97411"`` → ``"974"``."""
    return code[:3] if code.startswith("97") else code[:2]


def departement_sort_key(code: str) -> tuple[int, str]:
    """Numeric order with Corsica where it belongs (… 19, 2A, 2B, 21 …)."""
    if code in ("2A", "2B"):
        return (20, code)
    return (int(code), code) if code.isdigit() else (999, code)
