"""A model of the referent directory YAML (spec/operations.md) that renders with known lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import phonenumbers
from hypothesis import assume
from hypothesis import strategies as st

from vigie.departements import DEPARTEMENT_CODES, FORCES

_DEPS = sorted(DEPARTEMENT_CODES)


def _valid_phone(number: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(number, None))


# Fictional French numbers that phonenumbers accepts (geographic 01–05, 09, mobile 06).
PHONES = st.builds(
    lambda first, rest: f"+33{first}{rest}",
    st.sampled_from("1234569"),
    st.from_regex(r"\A[0-9]{8}\Z"),
).filter(_valid_phone)
NAMES = st.text(
    st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=30
).filter(lambda s: bool(s.strip()))

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "lun", "mar", "mer", "jeu"]
DAY_NAMES += ["ven", "sam", "dim", "Monday", "DIMANCHE", "Lundi", "Sat"]


def _hm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


RANGES = (
    st.tuples(st.integers(0, 24 * 60 - 1), st.integers(1, 24 * 60))
    .filter(lambda r: r[0] != r[1])
    .map(lambda r: f"{_hm(r[0])}-{_hm(r[1])}")
)
DAYS = st.lists(
    st.sampled_from(DAY_NAMES)
    | st.tuples(st.sampled_from(DAY_NAMES), st.sampled_from(DAY_NAMES)).map("-".join),
    max_size=3,
).map(",".join)
GROUPS = st.tuples(DAYS, st.lists(RANGES, min_size=1, max_size=2)).map(
    lambda g: (g[0] + " " if g[0] else "") + ", ".join(g[1])
)
HOURS = st.lists(GROUPS, min_size=1, max_size=3).flatmap(
    lambda groups: st.sampled_from([", ", "; ", " ; "]).map(lambda sep: sep.join(groups))
)


@dataclass
class ContactDoc:
    """One ``- name: … phone: … hours: …`` item: keys in order, values as raw YAML text."""

    items: list[tuple[str, str]]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.items if k == key), None)


@dataclass
class DirectoryDoc:
    departements: list[tuple[str, list[tuple[str, list[ContactDoc]]]]]
    fallback: list[ContactDoc]
    # Filled by render(): line (1-based) of each (path…) → for error checks.
    lines: dict[tuple[object, ...], int] = field(default_factory=dict)

    def render(self) -> str:
        out = ["version: 1", "departements:" if self.departements else "departements: {}"]
        self.lines = {}
        for d, (code, forces) in enumerate(self.departements):
            out.append(f"  {code}:")
            self.lines[("dep", d)] = len(out)
            for f, (force, contacts) in enumerate(forces):
                out.append(f"    {force}:")
                self.lines[("force", d, f)] = len(out)
                for c, contact in enumerate(contacts):
                    self._contact(out, contact, "      ", ("contact", d, f, c))
        out.append("national_fallback:")
        for c, contact in enumerate(self.fallback):
            self._contact(out, contact, "  ", ("fallback", c))
        return "\n".join(out) + "\n"

    def _contact(self, out: list[str], contact: ContactDoc, indent: str, path: tuple) -> None:
        for i, (key, value) in enumerate(contact.items):
            out.append(f"{indent}{'- ' if i == 0 else '  '}{key}: {value}")
            self.lines[(*path, key)] = len(out)
        self.lines[path] = self.lines[(*path, contact.items[0][0])]


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of it)."""
    return json.dumps(text, ensure_ascii=False)


def _maybe_plain(text: str) -> st.SearchStrategy[str]:
    # Unquoted codes (01) and phones (+33…) must stay the text typed (parser.py docstring).
    return st.sampled_from([text, quoted(text)])


@st.composite
def contact_docs(draw: st.DrawFn, *, hours: bool = True) -> ContactDoc:
    items = [("name", quoted(draw(NAMES))), ("phone", draw(PHONES.flatmap(_maybe_plain)))]
    if hours and draw(st.booleans()):
        items.append(("hours", draw(HOURS.flatmap(_maybe_plain))))
    return ContactDoc(draw(st.permutations(items)))


@st.composite
def directory_docs(draw: st.DrawFn) -> DirectoryDoc:
    codes = draw(st.lists(st.sampled_from(_DEPS), unique=True, max_size=4))
    departements = []
    for code in codes:
        forces = draw(st.lists(st.sampled_from(FORCES), min_size=1, max_size=2, unique=True))
        departements.append(
            (
                draw(_maybe_plain(code)),
                [(f, draw(st.lists(contact_docs(), min_size=1, max_size=3))) for f in forces],
            )
        )
    fallback = draw(st.lists(contact_docs(hours=False), min_size=1, max_size=2))
    return DirectoryDoc(departements, fallback)


def unquote(value: str) -> str:
    return json.loads(value) if value.startswith('"') else value


# -- mistakes ----------------------------------------------------------------------------

BAD_PHONES = st.sampled_from(
    ["+3349100001", "04 91 00 01 13", "", "+33", "0033491000013", "+33 4 91 00 00 13", "+0491"]
) | st.text(st.characters(categories=["L"]), min_size=1, max_size=8)
BAD_HOURS = st.sampled_from(
    [
        "mon-fri 08:00-25:00",
        "xyz 08:00-09:00",
        "08:00-08:00",
        "mon-fri",
        "24:00-02:00",
        "",
        "lun 8h",
    ]
)
BAD_CODES = st.sampled_from(["00", "20", "96", "2C", "975", "1", "ZZ", "130"])
KINDS = ["bad_phone", "rename_name", "bad_hours", "fallback_hours", "extra_key"]
KINDS += ["bad_code", "bad_force", "dup_dep"]


def _conflict(a: tuple, b: tuple) -> bool:
    """Would perturbing ``a`` hide (or be hidden by) a perturbation of ``b``?"""
    if a[0] == "fallback" or b[0] == "fallback":
        return a == b
    # ("dep", d) / ("force", d, f) / ("contact", d, f, c): same département, nested paths
    if a[1] != b[1]:
        return False
    if "dep" in (a[0], b[0]) or a[0] == b[0] == "force":  # two forces renamed PM: one key
        return True
    return a[2] == b[2] and ("force" in (a[0], b[0]) or a == b)


@st.composite
def perturbed_directories(draw: st.DrawFn) -> tuple[DirectoryDoc, list[tuple[tuple, str]]]:
    """A valid directory with 1–3 independent mistakes, and (line key, message fragment) of the
    error each must produce."""
    doc = draw(directory_docs())
    used: list[tuple] = []
    bad_codes: list[str] = []
    expected: list[tuple[tuple, str]] = []
    contact_sites = [
        ("contact", d, f, c)
        for d, (_, forces) in enumerate(doc.departements)
        for f, (_, contacts) in enumerate(forces)
        for c in range(len(contacts))
    ]
    fallback_sites = [("fallback", c) for c in range(len(doc.fallback))]
    dep_sites = [("dep", d) for d in range(len(doc.departements))]
    force_sites = [
        ("force", d, f)
        for d, (_, forces) in enumerate(doc.departements)
        for f in range(len(forces))
    ]

    def pick(sites: list[tuple]) -> tuple | None:
        free = [s for s in sites if not any(_conflict(s, u) for u in used)]
        if not free:
            return None
        site = draw(st.sampled_from(free))
        used.append(site)
        return site

    def contact(site: tuple) -> ContactDoc:
        if site[0] == "fallback":
            return doc.fallback[site[1]]
        return doc.departements[site[1]][1][site[2]][1][site[3]]

    def set_item(c: ContactDoc, key: str, value: str) -> None:
        c.items = [(k, v) for k, v in c.items if k != key] + [(key, value)]

    for kind in draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3)):
        if kind in ("bad_phone", "rename_name", "extra_key"):
            site = pick(contact_sites + fallback_sites)
            if site is None:
                continue
            c = contact(site)
            if kind == "bad_phone":
                set_item(c, "phone", quoted(draw(BAD_PHONES)))
                expected.append(((*site, "phone"), "numéro"))
            elif kind == "rename_name":
                c.items = [("nom" if k == "name" else k, v) for k, v in c.items]
                expected.append(((*site, "nom"), "clé « nom » inconnue"))
                expected.append((site, "« name » manquant"))
            else:
                c.items.append(("hour", quoted("mon-fri 08:00-19:00")))
                expected.append(((*site, "hour"), "clé « hour » inconnue"))
        elif kind == "bad_hours":
            site = pick(contact_sites)
            if site is not None:
                set_item(contact(site), "hours", quoted(draw(BAD_HOURS)))
                expected.append(((*site, "hours"), "hours invalide"))
        elif kind == "fallback_hours":
            site = pick(fallback_sites)
            if site is not None:
                set_item(contact(site), "hours", quoted("mon-fri 08:00-19:00"))
                expected.append(((*site, "hours"), "n'est pas permis"))
        elif kind == "bad_code":
            site = pick(dep_sites)
            if site is not None:
                code = draw(BAD_CODES.filter(lambda c: c not in bad_codes))
                bad_codes.append(code)
                doc.departements[site[1]] = (quoted(code), doc.departements[site[1]][1])
                expected.append((site, f"département « {code} » inconnu"))
        elif kind == "bad_force":
            site = pick(force_sites)
            if site is not None:
                d, f = site[1], site[2]
                forces = doc.departements[d][1]
                forces[f] = ("PM", forces[f][1])
                expected.append((site, "force « PM » inconnue"))
        elif kind == "dup_dep":
            site = pick(dep_sites)
            if site is None:
                continue
            code, forces = doc.departements[site[1]]
            doc.departements.append((quoted(unquote(code)), forces))
            expected.append((("dep", len(doc.departements) - 1), "en double"))
    assume(expected)
    return doc, expected


# -- arbitrary YAML-like text -----------------------------------------------------------

YAML_SCALARS = st.sampled_from(
    ["~", "null", "1", "01", "+33465710013", "PN", "GN", "13", "2A", "yes", "1.5", "''", "[]", "{}"]
) | st.text(st.characters(codec="utf-8"), max_size=12)
YAML_TOKENS = (
    st.sampled_from(
        [
            "version: 1\n",
            "departements:\n",
            "national_fallback:\n",
            "escalation:\n",
            "  ",
            "- ",
            "name: ",
            "phone: ",
            "hours: ",
            '"13":\n',
            "PN:\n",
            ": ",
            "\n",
            "&a ",
            "*a",
            "!!str ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "#",
            "'",
            '"',
            "---\n",
            "\t",
        ]
    )
    | YAML_SCALARS
)
YAMLISH = st.lists(YAML_TOKENS, max_size=40).map("".join)
