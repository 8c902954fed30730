"""Properties of the inbound SMS reader (``dispatch/service.py::parse_ack``): "OK 482" replies.

Acknowledgement codes are ASCII digit strings of 3 to 6 digits, never starting with 0: "100".."999"
while one is free for the number, then longer (``codes.pick_code``), reserved per phone
number; the reply is matched against them in the database.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from dispatch.inbound import parse_ack
from tests.property.common import fast

CODES = st.integers(100, 999).map(str) | st.integers(1000, 999_999).map(str)
SEPS = st.sampled_from(["", " ", "  ", ".", "-", "!", ":", ",", "\t", "\n", "'", '"', ";"])
OK_WORDS = st.sampled_from(["ok", "OK", "Ok", "oK", "o.k.", "O K", "oui", "OUI", "Oui", "yes"])


@fast(120)
@given(st.text() | st.from_regex(r"\A\s*(ok|OK)?\s*[0-9 ]{0,6}[.!]?\s*\Z"))
@example("")
@example("OK")
@example("OK 4821")
@example("OK 4821567")
@example("ok 48")
@example("merci j'arrive")
def test_any_reply_is_ok_code_or_other(body: str) -> None:
    """Any SMS body is read as a bare ``ok``, a 3- to 6-digit ``code``, or ``other``; never an
    exception, and a code is exactly what the body spells once spaces and punctuation are gone
    (so "48", "OK 4821567", "OK 482 merci" are never codes)."""
    what, code = parse_ack(body)
    assert what in ("ok", "code", "other")
    if what == "code":
        assert code is not None and 3 <= len(code) <= 6
        compact = re.sub(r"[\s.!,;:'\"-]+", "", body.upper())
        assert compact in (code, "OK" + code)
    else:
        assert code is None


@fast(120)
@given(st.booleans(), CODES, st.lists(SEPS, min_size=5, max_size=5), OK_WORDS)
@example(True, "482", ["", " ", "", "", ""], "OK")
@example(False, "482", [" ", " ", " ", " ", " "], "OK")
def test_code_replies_round_trip(with_ok: bool, code: str, seps: list[str], ok_word: str) -> None:
    """Every way a referent may type a code ("OK 482", "ok482", " 4 8 2 ", "OK-482!") reads back
    as that code; "OK" (or oui/yes) alone is a bare ok."""
    prefix = ok_word.replace(".", "").replace(" ", "") if with_ok else ""
    prefix = prefix if prefix.upper() == "OK" else ""
    body = seps[0] + prefix + seps[1] + code[0] + seps[2] + code[1] + seps[3] + code[2:] + seps[4]
    assert parse_ack(body) == ("code", code)
    assert parse_ack(seps[0] + ok_word + seps[4]) == ("ok", None)


OTHER_DIGITS = [0x0660, 0x06F0, 0x0966, 0xFF10]  # Arabic-Indic, Persian, Devanagari, fullwidth


@fast(30)
@given(CODES, st.sampled_from(OTHER_DIGITS), st.integers(0, 2))
@example("482", 0xFF10, 0)
def test_codes_are_ascii_digits(code: str, zero: int, at: int) -> None:
    """Regression: a reply read as a ``code`` carries ASCII digits
    (the codes stored are ASCII digit strings). ``_ACK_RE`` uses ``\\d``, so "OK ４８２" typed on a
    phone in fullwidth mode gives ``("code", "４８２")``, which can never match a stored code:
    the referent gets "code inconnu" for the right code. Expected: ("code", "482") (digits
    normalised) or ("other", None)."""
    typed = code[:at] + chr(zero + int(code[at])) + code[at + 1 :]
    what, got = parse_ack("OK " + typed)
    assert what == "other" or (what == "code" and got == code), (what, got)
