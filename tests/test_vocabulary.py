"""The shared vocabulary (``vigie/vocabulary.py``) is the one spelling of what crosses a boundary.

Each word is checked against the place that must agree with it: the topic table and the payload
models of the protocol, the API's schema, and the code that writes timeline events (an event type
nobody emits is dead vocabulary; an emitted one that is not listed is a typo waiting to happen).
"""

from __future__ import annotations

import ast
import re
import typing
from datetime import UTC, datetime
from pathlib import Path

from alert_server.alerts import schemas
from vigie import payloads, topics
from vigie.vocabulary import (
    ACTIVE_STATES,
    CLOSED_STATES,
    AlertEventType,
    AlertState,
    DownlinkType,
    SessionAction,
    UplinkTopic,
    for_browsers,
)

ROOT = Path(__file__).resolve().parent.parent


def test_words_are_their_plain_strings() -> None:
    # Stored, compared and serialised as the plain string: nothing in the database changes.
    assert AlertState.OPEN == "open"
    assert f"{UplinkTopic.ALERT}" == "alert"
    assert {AlertState.OPEN: 1}["open"] == 1


def test_states_are_split_into_active_and_closed() -> None:
    assert set(ACTIVE_STATES) | set(CLOSED_STATES) == set(AlertState)
    assert not set(ACTIVE_STATES) & set(CLOSED_STATES)


def test_api_schema_spells_the_same_states() -> None:
    assert set(typing.get_args(schemas.AlertState)) == {s.value for s in AlertState}
    assert set(schemas.STATE_LABELS_FR) == set(AlertState)


def test_topics_and_payloads_use_the_vocabulary() -> None:
    assert set(topics.UPLINKS) == set(UplinkTopic)
    assert set(payloads.UPLINK_MODELS) == set(UplinkTopic)
    assert topics.uplink("dev-1", UplinkTopic.ALERT) == "vigie/v1/dev/dev-1/alert"


def _emitted_event_types() -> set[str]:
    """Every ``type_=`` given to the timeline writer in the alert server's code."""
    found: set[str] = set()
    for path in (ROOT / "alert_server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg != "type_":
                    continue
                value = kw.value
                if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
                    if value.value.id == "AlertEventType":
                        found.add(AlertEventType[value.attr].value)
                elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(value.value)
    return found


def test_every_event_type_listed_is_emitted_and_the_reverse() -> None:
    emitted = _emitted_event_types()
    emitted.discard("unique")  # an Alembic constraint type, not a timeline event
    listed = {e.value for e in AlertEventType}
    # Written through a variable: the PIN verdicts and the visit actions after an alert.
    indirect = {
        AlertEventType.PIN_WRONG,
        AlertEventType.PIN_UNVERIFIABLE,
        AlertEventType.PIN_LOCKED_OUT,
        AlertEventType.SESSION_START_AFTER_ALERT,
        AlertEventType.SESSION_EXTEND_AFTER_ALERT,
        AlertEventType.SESSION_CHECKIN_AFTER_ALERT,
        AlertEventType.SESSION_END_AFTER_ALERT,
    }
    assert emitted - listed == set(), "emitted but not in the vocabulary"
    assert listed - emitted - {e.value for e in indirect} == set(), "listed but never emitted"


def test_every_event_type_has_a_french_label_or_is_a_visit_action() -> None:
    visit = {e for e in AlertEventType if e.startswith("session_")}
    assert set(AlertEventType) - visit - {"victim_support_offered", "verified_false_alarm"} <= set(
        schemas.EVENT_LABELS_FR
    )


def test_downlink_types_cover_the_protocol_commands() -> None:
    body = payloads.command(DownlinkType.LOCATE, datetime(2026, 1, 1, tzinfo=UTC))
    assert b'"type":"locate"' in body


def test_session_actions_are_the_protocols() -> None:
    action = payloads.SessionMsg.model_fields["action"].annotation
    assert set(typing.get_args(action)) == {a.value for a in SessionAction}


BROWSER_SCRIPTS = [
    ROOT / "alert_server" / "phoneapp" / "static" / "app.js",
    *sorted((ROOT / "alert_server" / "dashboard" / "static" / "js").glob("*.js")),
]


def test_browser_scripts_take_their_words_from_the_vocabulary() -> None:
    """The console's scripts and the worker's app get the words from the server
    (``for_browsers``): every word they name exists, and none is spelled in a comparison (a
    typo there is an alert that never shows "reçue")."""
    words = for_browsers()
    spelled = {v for enum in words.values() for v in enum.values()}
    spelled_by_app = {
        v
        for name in ("DownlinkType", "AlertKind", "UplinkTopic", "SessionAction")
        for v in words[name].values()
    }
    named = 0
    for path in BROWSER_SCRIPTS:
        text = path.read_text(encoding="utf-8")
        # `const CMD = W.DownlinkType;` → CMD.ALERT_RECEIVED
        aliases = dict(
            (alias, enum) for alias, enum in re.findall(r"const (\w+) = W\.(\w+);", text)
        )
        for alias, enum in aliases.items():
            assert enum in words, f"{path.name}: W.{enum} is not served"
            for name in re.findall(rf"\b{alias}\.([A-Z_]+)\b", text):
                assert name in words[enum], f"{path.name}: {alias}.{name} ({enum}) does not exist"
                named += 1
        for enum, name in re.findall(r"\b(?:W|words)\.(\w+)\.([A-Z_]+)\b", text):
            assert enum in words and name in words[enum], f"{path.name}: {enum}.{name}"
            named += 1
        # The worker's app never sees an alert's state: its own screen states ("sending",
        # "received", "acknowledged") are its words, not the server's.
        forbidden = spelled_by_app if path.name == "app.js" else spelled
        for literal in re.findall(r"""[!=]==? ["']([^"']+)["']""", text):
            assert literal not in forbidden, f"{path.name}: compares with the spelled {literal!r}"
        for literal in re.findall(r"""["']([a-z_]+\.[a-z_]+)["']""", text):
            assert literal not in {t.value for t in DownlinkType}, f"{path.name}: {literal!r}"
    assert named >= 20  # the scripts do use the served words
