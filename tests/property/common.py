"""Shared hypothesis settings and strategies of the property tests.

Runs are derandomized by default (same examples every run, no ``.hypothesis`` folder written),
so the suite stays deterministic in CI. ``VIGIE_PROPERTY_RANDOM=1`` explores with a fresh seed,
``VIGIE_PROPERTY_SCALE=10`` runs ten times more examples.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_RANDOM = os.environ.get("VIGIE_PROPERTY_RANDOM") == "1"
# Multiplies every test's example count (e.g. 10 for a long exploratory run).
_SCALE = float(os.environ.get("VIGIE_PROPERTY_SCALE", "1"))


def fast(max_examples: int) -> settings:
    """Settings for one property: few examples, no deadline (a loaded 2-core CI box)."""
    return settings(
        max_examples=max(1, round(max_examples * _SCALE)),
        deadline=None,
        database=None,
        derandomize=not _RANDOM,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# -- JSON ---------------------------------------------------------------------------------

# Text a message can carry: NUL and unpaired surrogates are refused by ``decode_json`` (no
# database column can hold them); ``test_unstorable_text_is_refused`` covers those.
STORABLE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(STORABLE, max_size=20)
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(STORABLE, max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
# What Python code may hand to a model (NaN and infinities included).
PY_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(STORABLE, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(STORABLE, max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)

# -- time -------------------------------------------------------------------------------

UTC_DATETIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
NOW = datetime(2026, 11, 22, 18, 4, 10, tzinfo=UTC)
NOWS = st.builds(lambda s: NOW + timedelta(seconds=s), st.integers(-(10**8), 10**8))


@contextmanager
def server_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit (1000), which the server runs with.

    pytest and hypothesis raise the limit while a test runs (hypothesis to the current depth
    + 2000), which would hide a RecursionError that a deeply nested payload causes in the
    server's own threads.
    """
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)
