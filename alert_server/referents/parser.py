"""Parse and check the referent directory YAML, reporting EVERY error with its line.

The YAML is read with PyYAML's node API (``yaml.compose``) so that every value keeps its line,
and scalars are read from their source text: ``phone: +33491000013`` or ``01:`` written without
quotes stay the text that was typed instead of becoming integers (YAML 1.1 would read ``01`` as
the number 1 and ``+33491000013`` as an int).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import phonenumbers
import yaml
from pydantic import ValidationError

from alert_server.referents.hours import HoursError, parse_hours
from alert_server.referents.schemas import Directory, DirectoryError, ReferentContact
from dispatch.policy import DEFAULT_POLICY, EscalationPolicy
from vigie.departements import DEPARTEMENT_CODES, FORCES

_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # ASCII digits only: Twilio's From is ASCII
_TOP_KEYS = ("version", "departements", "national_fallback", "escalation")
_CONTACT_KEYS = ("name", "phone", "hours")


class _Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.items.append((line, message))

    def lines(self) -> list[str]:
        # Stable order: by line, then in the order found.
        ordered = sorted(enumerate(self.items), key=lambda p: (p[1][0], p[0]))
        return [f"{self.source}:{line}: {msg}" for _, (line, msg) in ordered]


def _scalar(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    return None


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _mapping(
    node: yaml.Node, errors: _Errors, what: str
) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
    """(key text, key node, value node) of a mapping; duplicate keys are reported."""
    if not isinstance(node, yaml.MappingNode):
        errors.add(node, f"{what} : un dictionnaire (clé: valeur) est attendu")
        return None
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key is None:
            errors.add(key_node, f"{what} : clé non textuelle")
            continue
        if key in seen:
            # yaml.safe_load would silently keep the last one and drop a referent.
            errors.add(key_node, f"{what} : clé « {key} » en double (déjà ligne {seen[key]})")
            continue
        seen[key] = key_node.start_mark.line + 1
        out.append((key, key_node, value_node))
    return out


def _contact(
    node: yaml.Node, errors: _Errors, what: str, *, hours_allowed: bool
) -> ReferentContact | None:
    items = _mapping(node, errors, what)
    if items is None:
        return None
    fields = {k: (kn, vn) for k, kn, vn in items}
    ok = True
    for key, key_node, _ in items:
        if key not in _CONTACT_KEYS:
            errors.add(key_node, f"{what} : clé « {key} » inconnue (attendu name, phone, hours)")
            ok = False
    name = phone = None
    if "name" not in fields:
        errors.add(node, f"{what} : « name » manquant")
        ok = False
    else:
        name = _scalar(fields["name"][1])
        if name is None or _is_null(fields["name"][1]) or not name.strip():
            errors.add(fields["name"][1], f"{what} : « name » doit être un texte non vide")
            ok = False
    if "phone" not in fields:
        errors.add(node, f"{what} : « phone » manquant")
        ok = False
    else:
        phone_node = fields["phone"][1]
        phone = _scalar(phone_node)
        if phone is None or not _valid_e164(phone.strip()):
            shown = phone if phone is not None else "?"
            errors.add(
                phone_node,
                f"{what} : numéro « {shown} » invalide (format E.164 attendu, ex. +33491000013)",
            )
            ok = False
    hours = None
    if "hours" in fields:
        hours_node = fields["hours"][1]
        if not hours_allowed:
            errors.add(
                hours_node,
                f"{what} : « hours » n'est pas permis ici (le repli national doit être "
                "joignable en permanence)",
            )
            ok = False
        else:
            text = _scalar(hours_node)
            if text is None or _is_null(hours_node):
                errors.add(hours_node, f"{what} : « hours » doit être un texte")
                ok = False
            else:
                try:
                    hours = parse_hours(text)
                except HoursError as exc:
                    errors.add(hours_node, f"{what} : hours invalide : {exc}")
                    ok = False
    if not ok or name is None or phone is None:
        return None
    return ReferentContact(
        name=name.strip(), phone=phone.strip(), hours=hours, line=node.start_mark.line + 1
    )


def _valid_e164(phone: str) -> bool:
    if not _E164_RE.match(phone):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return False


def _contacts(
    node: yaml.Node, errors: _Errors, what: str, *, hours_allowed: bool = True
) -> tuple[ReferentContact, ...] | None:
    if not isinstance(node, yaml.SequenceNode):
        errors.add(node, f"{what} : une liste de contacts (- name: … phone: …) est attendue")
        return None
    if not node.value:
        errors.add(node, f"{what} : liste vide")
        return None
    out: list[ReferentContact] = []
    ok = True
    for i, item in enumerate(node.value, start=1):
        contact = _contact(item, errors, f"{what} contact {i}", hours_allowed=hours_allowed)
        if contact is None:
            ok = False
        else:
            out.append(contact)
    return tuple(out) if ok else None


def _node_at(node: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    """The deepest node along a pydantic error location (for its line).

    For a list or dictionary reached through a key, the key's line (``steps:``) is more
    telling than the line of its first item.
    """
    shown = node
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if _scalar(k) == str(part)), None)
            if pair is None:
                break
            node = pair[1]
            shown = pair[0] if isinstance(node, yaml.CollectionNode) else node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = shown = node.value[part]
        else:
            break
    return shown


_POLICY_MESSAGES = {
    "contact must be 1 or more, or 'all'": "contact doit valoir 1 ou plus, ou « all »",
    "steps must be in increasing after_s order": "les étapes doivent être dans l'ordre des after_s",
}


def _french(err: Any) -> str:
    """A French message for a pydantic error of the escalation block."""
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"doit être supérieur ou égal à {ctx.get('ge')}"
    if kind in ("literal_error", "enum"):
        return f"valeur attendue : {ctx.get('expected')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "nombre entier attendu"
    if kind == "missing":
        return "champ obligatoire manquant"
    if kind == "extra_forbidden":
        return "clé inconnue (attendu after_s, contact, channels ; steps, repeat)"
    if kind == "too_short":
        return f"au moins {ctx.get('min_length')} élément(s) attendu(s)"
    if kind in ("tuple_type", "list_type"):
        return "liste attendue"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "dictionnaire attendu"
    if kind == "value_error":
        error = ctx.get("error")
        text = str(error) if error is not None else str(err.get("msg", ""))
        return _POLICY_MESSAGES.get(text, text)
    return str(err.get("msg", kind))


def _escalation(node: yaml.Node, errors: _Errors) -> EscalationPolicy | None:
    try:
        # Build Python values with the safe constructor (ints stay ints here).
        value = yaml.SafeLoader("").construct_document(node)
    except yaml.YAMLError as exc:
        errors.add(node, f"escalation : {exc}")
        return None
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        # A scalar PyYAML cannot build (a date like 2026-13-45, "!!bool maybe", an integer
        # beyond Python's digit limit): refused on its line, like any other mistake.
        errors.add(node, f"escalation : valeur illisible ({type(exc).__name__}: {exc})")
        return None
    try:
        return EscalationPolicy.model_validate(value)
    except ValidationError as exc:
        found = exc.errors()
        locs = [tuple(e["loc"]) for e in found]
        for err, loc in zip(found, locs, strict=True):
            # "channels: [fax]" also fails "at least one channel" once "fax" is dropped: keep
            # the precise error only.
            if any(other != loc and other[: len(loc)] == loc for other in locs):
                continue
            where = ".".join(str(p) for p in loc if isinstance(p, int) or p in _LOC_NAMES)
            errors.add(
                _node_at(node, loc),
                f"escalation{'.' + where if where else ''} : {_french(err)}",
            )
        return None


_LOC_NAMES = ("steps", "repeat", "after_s", "contact", "channels")


def parse_directory(text: str, source: str = "<annuaire>") -> Directory:
    """Parse and check a directory; ``DirectoryError`` lists every problem found."""
    errors = _Errors(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise DirectoryError(
            [f"{source}:{line}: YAML invalide : {exc.problem or exc.context}"]
        ) from exc
    except yaml.YAMLError as exc:
        raise DirectoryError([f"{source}:1: YAML invalide : {exc}"]) from exc
    except RecursionError as exc:
        raise DirectoryError([f"{source}:1: YAML imbriqué trop profondément"]) from exc
    if root is None:
        raise DirectoryError([f"{source}:1: fichier vide"])
    top = _mapping(root, errors, "annuaire")
    if top is None:
        raise DirectoryError(errors.lines())
    fields = {k: (kn, vn) for k, kn, vn in top}
    for key, key_node, _ in top:
        if key not in _TOP_KEYS:
            errors.add(
                key_node,
                f"clé « {key} » inconnue (attendu version, departements, national_fallback, "
                "escalation)",
            )

    version = 1
    if "version" in fields:
        value_node = fields["version"][1]
        if _scalar(value_node) != "1":
            errors.add(value_node, "version : seule la version 1 est connue")

    departements: dict[str, dict[str, tuple[ReferentContact, ...]]] = {}
    if "departements" not in fields:
        errors.add(root, "« departements » manquant")
    else:
        deps_node = fields["departements"][1]
        for code, code_node, dep_node in _mapping(deps_node, errors, "departements") or []:
            code = code.strip()
            if code not in DEPARTEMENT_CODES:
                hint = ""
                if code.isdigit() and len(code) == 1:
                    hint = f" (vouliez-vous « {code.zfill(2)} » ?)"
                elif code == "20":
                    hint = " (la Corse est « 2A » ou « 2B »)"
                errors.add(code_node, f"département « {code} » inconnu{hint}")
                continue
            forces: dict[str, tuple[ReferentContact, ...]] = {}
            force_items = _mapping(dep_node, errors, f"département {code}")
            if force_items is not None and not force_items:
                errors.add(dep_node, f"département {code} : aucune force (PN ou GN)")
            for force, force_node, list_node in force_items or []:
                if force not in FORCES:
                    errors.add(
                        force_node,
                        f"département {code} : force « {force} » inconnue (attendu PN ou GN)",
                    )
                    continue
                contacts = _contacts(list_node, errors, f"{code} {force}")
                if contacts is not None:
                    forces[force] = contacts
            if forces:
                departements[code] = forces

    fallback: tuple[ReferentContact, ...] = ()
    if "national_fallback" not in fields:
        errors.add(
            root, "« national_fallback » manquant (contacts des positions inconnues ou hors zone)"
        )
    else:
        fallback = (
            _contacts(
                fields["national_fallback"][1], errors, "national_fallback", hours_allowed=False
            )
            or ()
        )

    escalation = DEFAULT_POLICY
    if "escalation" in fields and not _is_null(fields["escalation"][1]):
        escalation = _escalation(fields["escalation"][1], errors) or DEFAULT_POLICY

    if errors.items:
        raise DirectoryError(errors.lines())
    return Directory(
        departements=departements,
        national_fallback=fallback,
        escalation=escalation,
        version=version,
        source=source,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_directory_file(path: Path) -> Directory:
    """Read and parse a directory file (``DirectoryError`` for I/O and content problems)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DirectoryError([f"{path}:1: le fichier n'est pas en UTF-8"]) from exc
    except OSError as exc:
        raise DirectoryError([f"{path}: lecture impossible ({exc.strerror or exc})"]) from exc
    return parse_directory(text, str(path))
