"""Properties of the referent directory reader (``alert_server/referents/parser.py``), the code
behind ``vigie referents import`` and ``vigie referents check``.

Contract (parser.py): ``parse_directory`` returns a Directory or raises ``DirectoryError`` listing
EVERY problem, one ``FILE:LINE: message`` each; never another exception.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, example, given
from hypothesis import strategies as st

from alert_server.referents.parser import load_directory_file, parse_directory
from alert_server.referents.schemas import Directory, DirectoryError
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy
from tests.property.common import fast, server_recursion_limit
from tests.property.directory import (
    PHONES,
    YAMLISH,
    ContactDoc,
    DirectoryDoc,
    directory_docs,
    perturbed_directories,
    unquote,
)

SOURCE = "annuaire.yaml"
_LINE_RE = re.compile(r"^annuaire\.yaml:(\d+): (.+)$", re.S)
E164_ASCII = re.compile(r"^\+[1-9][0-9]{6,14}$")
_YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _load(text: str) -> Directory | DirectoryError:
    """parse_directory's answer or its DirectoryError; anything else propagates (a failure)."""
    try:
        return parse_directory(text, SOURCE)
    except DirectoryError as exc:
        return exc


def _errors(exc: DirectoryError, text: str) -> list[tuple[int, str]]:
    """(line, message) of every error, checking each is ``FILE:LINE: message`` in the file."""
    assert exc.errors, "a DirectoryError lists at least one problem"
    assert str(exc) == "\n".join(exc.errors)
    n_lines = len(_YAML_BREAKS.split(text)) + 1  # YAML also breaks lines on \r, NEL, U+2028/9
    out = []
    for entry in exc.errors:
        m = _LINE_RE.match(entry)
        assert m, f"not FILE:LINE: message: {entry!r}"
        line = int(m.group(1))
        assert 1 <= line <= n_lines, (line, entry)
        out.append((line, m.group(2)))
    return out


def _contacts_match(
    doc_contacts: list[ContactDoc], loaded: Any, doc: DirectoryDoc, path: tuple
) -> None:
    assert len(loaded) == len(doc_contacts)
    for c, (want, got) in enumerate(zip(doc_contacts, loaded, strict=True)):
        name, phone, hours = want.get("name"), want.get("phone"), want.get("hours")
        assert name is not None and phone is not None
        assert got.name == unquote(name).strip()
        assert got.phone == unquote(phone)
        assert (got.hours.text if got.hours else None) == (unquote(hours) if hours else None)
        assert got.line == doc.lines[(*path, c)]


# -- valid directories ----------------------------------------------------------------------


@fast(50)
@given(directory_docs())
def test_valid_directories_load_and_round_trip(doc: DirectoryDoc) -> None:
    """A directory written by the rules of operations.md loads; every département, force,
    name (stripped), phone, hours text and line comes back as written, in order; the default
    escalation applies; the hash is the text's."""
    text = doc.render()
    got = parse_directory(text, SOURCE)
    assert list(got.departements) == [unquote(code) for code, _ in doc.departements]
    for d, (code, forces) in enumerate(doc.departements):
        loaded = got.departements[unquote(code)]
        assert list(loaded) == [force for force, _ in forces]
        for f, (force, contacts) in enumerate(forces):
            _contacts_match(contacts, loaded[force], doc, ("contact", d, f))
    _contacts_match(doc.fallback, got.national_fallback, doc, ("fallback",))
    assert got.escalation == DEFAULT_POLICY and got.version == 1 and got.source == SOURCE
    assert got.sha256 == hashlib.sha256(text.encode()).hexdigest()


@fast(30)
@given(directory_docs(), st.sampled_from([None, False, True]))
def test_directories_dumped_by_pyyaml_load_the_same(doc: DirectoryDoc, flow: bool | None) -> None:
    """The same directory written by another tool (PyYAML's dumper, block or flow style, its
    own quoting) loads to the same referents as the hand-written layout."""
    data = {
        "version": 1,
        "departements": {
            unquote(code): {
                force: [{k: unquote(v) for k, v in c.items} for c in contacts]
                for force, contacts in forces
            }
            for code, forces in doc.departements
        },
        "national_fallback": [{k: unquote(v) for k, v in c.items} for c in doc.fallback],
    }
    text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=flow, width=80)
    a = parse_directory(doc.render(), SOURCE)
    b = parse_directory(text, SOURCE)

    def strip(d: Directory) -> Any:
        deps = {
            code: {f: [(c.name, c.phone, c.hours) for c in cs] for f, cs in forces.items()}
            for code, forces in d.departements.items()
        }
        return deps, [(c.name, c.phone) for c in d.national_fallback], d.escalation

    assert strip(a) == strip(b)


# -- perturbed directories -------------------------------------------------------------------


@fast(80)
@given(perturbed_directories())
def test_every_mistake_is_reported_with_its_line(case: tuple[DirectoryDoc, list]) -> None:
    """A valid directory with up to three independent mistakes (bad phone, missing name, unknown
    key, bad hours, hours on the national fallback, unknown département or force, duplicate
    département) is refused with ONE DirectoryError that lists each mistake at its own line."""
    doc, expected = case
    text = doc.render()
    got = _load(text)
    assert isinstance(got, DirectoryError), "a directory with mistakes was accepted"
    errors = _errors(got, text)
    for key, fragment in expected:
        line = doc.lines[key]
        assert any(n == line and fragment in msg for n, msg in errors), (line, fragment, errors)


# -- arbitrary input ----------------------------------------------------------------------------


DIRECTORY_WORDS = st.sampled_from(
    [
        *("version", "departements", "national_fallback", "escalation", "13", "2A", "PN"),
        *("GN", "name", "phone", "hours", "steps", "repeat", "after_s", "contact", "channels"),
    ]
)
YAML_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.sampled_from(["+33465710013", "mon-fri 08:00-19:00", "sms", "all", "2026-11-22"])
    | st.text(max_size=10)
)
YAML_DOCS = st.recursive(
    YAML_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(DIRECTORY_WORDS | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
).flatmap(
    lambda doc: st.sampled_from([None, False, True]).map(
        lambda flow: yaml.safe_dump(doc, allow_unicode=True, default_flow_style=flow)
    )
)


@fast(150)
@given(YAMLISH | YAML_DOCS | st.text())
@example("")
@example("- a\n- b\n")
@example("departements: &a\n  13: *a\n")
@example("a: 1\n---\nb: 2\n")
@example("\x00")
def test_any_text_loads_or_is_refused_with_lines(text: str) -> None:
    """For any text (YAML-like token soup, any YAML document built from the directory's own
    keys, arbitrary unicode): a Directory, or DirectoryError whose every entry is
    ``annuaire.yaml:LINE: message`` with LINE inside the file."""
    got = _load(text)
    if isinstance(got, DirectoryError):
        _errors(got, text)
    else:
        assert got.national_fallback, "a loaded directory always has a national fallback"


@fast(25)
@given(directory_docs(), st.binary(max_size=200))
def test_any_file_bytes_load_or_are_refused(tmp_path: Path, doc: DirectoryDoc, junk: bytes) -> None:
    """``load_directory_file`` of any bytes (a valid file with junk appended, non-UTF-8…):
    a Directory or a DirectoryError naming the file, never another exception."""
    path = tmp_path / "annuaire.yaml"
    path.write_bytes(doc.render().encode() + junk)
    try:
        load_directory_file(path)
    except DirectoryError as exc:
        assert exc.errors and all(e.startswith(str(path)) for e in exc.errors)


# -- the escalation block ----------------------------------------------------------------------

STEP_KEYS = st.sampled_from(["after_s", "contact", "channels", "steps", "repeat", "x"])
ESC_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.integers(-5, 400) | st.sampled_from(["all", "sms", "voice", "fax", "", "1"]) | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STEP_KEYS, inner, max_size=4),
    max_leaves=12,
)
VALID_STEPS = st.lists(
    st.fixed_dictionaries(
        {
            "after_s": st.integers(0, 600),
            "contact": st.integers(1, 5) | st.just("all"),
            "channels": st.lists(st.sampled_from(["sms", "voice"]), min_size=1, max_size=2),
        }
    ),
    min_size=1,
    max_size=5,
).map(lambda steps: sorted(steps, key=lambda s: s["after_s"]))
VALID_POLICIES = st.fixed_dictionaries(
    {"steps": VALID_STEPS}, optional={"repeat": st.integers(0, 5)}
)

BASE = (
    "departements:\n"
    '  "13":\n'
    "    PN:\n"
    '      - {name: "Référent", phone: "+33465710013"}\n'
    "national_fallback:\n"
    '  - {name: "Permanence", phone: "+33199000000"}\n'
)
ESCALATION_LINE = BASE.count("\n") + 1


def _with_escalation(value: Any) -> str:
    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return BASE + "escalation: " + flow.replace("\n...\n", "").strip() + "\n"


@fast(80)
@given(VALID_POLICIES | ESC_VALUES | st.dictionaries(STEP_KEYS, ESC_VALUES, max_size=3))
def test_any_escalation_block_loads_or_is_refused_on_its_line(value: Any) -> None:
    """Any structure under ``escalation:`` loads (and then equals the policy it spells) or is
    refused with errors on the escalation line that say ``escalation…``."""
    text = _with_escalation(value)
    got = _load(text)
    if isinstance(got, DirectoryError):
        for line, msg in _errors(got, text):
            assert line == ESCALATION_LINE and msg.startswith("escalation"), (line, msg)
    elif value is not None:
        assert got.escalation == EscalationPolicy.model_validate(value)


@fast(30)
@given(
    st.sampled_from(
        [
            "2026-13-45",
            "2026-02-30",
            "!!float abc",
            "!!int abc",
            "!!bool maybe",
            "{repeat: " + "1" * 5000 + "}",
            "{steps: [{after_s: 2026-13-01, contact: 1, channels: [sms]}]}",
        ]
    )
)
@example("{steps: [{after_s: 2026-13-01, contact: 1, channels: [sms]}]}")
@example("!!bool maybe")
def test_escalation_scalars_pyyaml_cannot_build_are_refused(raw: str) -> None:
    """Regression: a scalar that PyYAML's SafeLoader resolves to a type but
    cannot build (a date with month 13, ``!!float abc``, an int of 5000 digits, ``!!bool
    maybe``) makes ``SafeLoader.construct_document`` raise ValueError / KeyError, not a
    YAMLError; ``parser._escalation`` catches only YAMLError, so ``parse_directory`` raises a
    bare ValueError/KeyError and ``vigie referents import`` dies with a traceback instead of
    ``annuaire.yaml:7: escalation : …``."""
    text = BASE + "escalation: " + raw + "\n"
    got = _load(text)
    assert isinstance(got, DirectoryError)
    assert any(line == ESCALATION_LINE for line, _ in _errors(got, text))


@fast(20)
@given(st.integers(1, 3000), st.booleans())
@example(2000, False)
def test_deeply_nested_yaml_is_refused(depth: int, top: bool) -> None:
    """Regression: a YAML document nesting flow sequences a few hundred deep makes
    ``yaml.compose`` (recursive) raise RecursionError, which ``parse_directory`` does not
    catch. Expected: DirectoryError (run under the server's default recursion limit)."""
    nested = "[" * depth + "]" * depth
    text = nested + "\n" if top else BASE + "escalation: " + nested + "\n"
    with server_recursion_limit():
        got = _load(text)
    if isinstance(got, DirectoryError):
        _errors(got, text)


# -- phone numbers -----------------------------------------------------------------------------

OTHER_DIGITS = [0x0660, 0x06F0, 0x0966, 0xFF10]  # Arabic-Indic, Persian, Devanagari, fullwidth


@fast(40)
@given(PHONES, st.sampled_from(OTHER_DIGITS), st.integers(4, 11))
@example("+33465710013", 0x0660, 4)
def test_loaded_phones_are_ascii_e164(phone: str, zero: int, at: int) -> None:
    """Regression: a phone that loads is an ASCII E.164 number (what Twilio is
    given and what inbound SMS ``From`` are compared with). ``_E164_RE`` uses ``\\d``, which
    matches any Unicode digit, and phonenumbers normalises them, so ``+33٤65710013`` (an
    Arabic-Indic four) is accepted and stored verbatim; it can never match Twilio's ``From``.
    Expected: refused with the phone's line, or normalised to ASCII."""
    assume(at < len(phone))
    mixed = phone[:at] + chr(zero + int(phone[at])) + phone[at + 1 :]
    text = BASE.replace("+33465710013", mixed)
    got = _load(text)
    if isinstance(got, Directory):
        for contacts in got.departements["13"].values():
            for c in contacts:
                assert E164_ASCII.match(c.phone), c.phone
    else:
        assert any(line == 4 and "numéro" in msg for line, msg in _errors(got, text))


def test_base_document_is_valid() -> None:
    """The fixture the escalation properties build on loads as it stands."""
    assert isinstance(_load(BASE), Directory)
    with pytest.raises(DirectoryError):
        parse_directory("", SOURCE)
