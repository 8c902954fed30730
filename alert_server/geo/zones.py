"""Police or gendarmerie zone of each commune, from a CSV. Pure: no database here.

Two formats are accepted, told apart by the header:

* the Ministry of the Interior's open dataset "Compétence territoriale gendarmerie et police
  nationales" (comma-separated): ``code_commune,libelle_commune,institution,id_service,service,
  code_postal,codes_postaux``;
* the hand-made sample of ``shared/geo`` (semicolon-separated):
  ``code_commune;libelle_commune;institution;code_departement``.

Only ``code_commune`` and ``institution`` (``PN`` or ``GN``) are required; the other columns are
kept when present.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alert_server.geo.boundaries import GeoDataError, read_bytes
from vigie.departements import (
    FORCES,
    departement_of_commune,
    is_commune_code,
    is_departement_code,
)

REQUIRED_COLUMNS = ("code_commune", "institution")


@dataclass(frozen=True, slots=True)
class Zone:
    code_commune: str
    libelle_commune: str
    institution: str  # "PN" or "GN"
    departement: str
    id_service: str | None = None
    service: str | None = None
    code_postal: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneSet:
    source: str
    sha256: str
    format: str  # "officiel" or "exemple"
    zones: tuple[Zone, ...]


def parse_zones(path: Path) -> ZoneSet:
    """Read a zone CSV; refuse it with one line ``FILE:LINE : …`` at the first bad row."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Some ministry exports are Windows-1252; the codes are ASCII either way, only the
        # commune names would suffer from a wrong guess.
        text = raw.decode("cp1252", errors="replace")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise GeoDataError(f"{path}:1: fichier vide (en-tête attendu)")
    header_line = lines[0]
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    # newline=None: "\r" alone (Excel's "CSV (Macintosh)") ends a line too.
    reader = csv.reader(io.StringIO(text, newline=None), delimiter=delimiter)

    def rows() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:  # an unclosed quote, a field over the csv module's limit
            raise GeoDataError(f"{path}:{reader.line_num}: CSV illisible ({exc})") from exc

    it = rows()
    header = [h.strip().lower() for h in next(it)]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise GeoDataError(
            f"{path}:1: colonne(s) {', '.join(missing)} absente(s) de l'en-tête "
            f"(attendu code_commune{delimiter}libelle_commune{delimiter}institution…)"
        )
    fmt = "officiel" if "id_service" in header or "codes_postaux" in header else "exemple"
    col = {name: i for i, name in enumerate(header)}

    def get(row: list[str], name: str) -> str | None:
        i = col.get(name)
        if i is None or i >= len(row):
            return None
        value = row[i].strip()
        return value or None

    zones: dict[str, Zone] = {}
    first_line: dict[str, int] = {}
    for row in it:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise GeoDataError(
                f"{path}:{line}: {len(row)} colonne(s) au lieu de {len(header)} "
                f"(séparateur « {delimiter} »)"
            )
        code = (get(row, "code_commune") or "").upper()
        # Excel drops the leading zero of "01001": restore it rather than refuse the file.
        if code.isdigit() and len(code) == 4:
            code = "0" + code
        if not is_commune_code(code) or not is_departement_code(departement_of_commune(code)):
            raise GeoDataError(f"{path}:{line}: code_commune « {code} » invalide")
        institution = (get(row, "institution") or "").upper()
        if institution not in FORCES:
            raise GeoDataError(
                f"{path}:{line}: institution « {institution} » inconnue (attendu PN ou GN)"
            )
        dep_col = get(row, "code_departement")
        if dep_col is not None and dep_col.upper() != departement_of_commune(code):
            raise GeoDataError(
                f"{path}:{line}: code_departement « {dep_col} » ne correspond pas à la "
                f"commune {code}"
            )
        zone = Zone(
            code_commune=code,
            libelle_commune=get(row, "libelle_commune") or "",
            institution=institution,
            departement=departement_of_commune(code),
            id_service=get(row, "id_service"),
            service=get(row, "service"),
            code_postal=get(row, "code_postal"),
        )
        if code in zones:
            if zones[code].institution != institution:
                raise GeoDataError(
                    f"{path}:{line}: commune {code} déjà en {zones[code].institution} à la "
                    f"ligne {first_line[code]}, ici en {institution}"
                )
            continue  # the same commune listed twice (one line per service): same answer
        zones[code] = zone
        first_line[code] = line
    if not zones:
        raise GeoDataError(f"{path}: aucune commune (fichier sans données)")
    return ZoneSet(
        source=path.name,
        sha256=hashlib.sha256(raw).hexdigest(),
        format=fmt,
        zones=tuple(zones.values()),
    )
