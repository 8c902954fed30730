"""Many devices from one CSV file (``vigie devices import``): read and checked whole.

One line per device, a header line naming the columns (any order):

- required: ``device_id, worker, role, phone, pin, duress_pin``;
- optional: ``site_lat, site_lon, site_label`` (a fixed site, e.g. a pharmacy's button) and
  ``gateway`` (empty or ``mqtt``: a device with its own MQTT account; ``osmand``: Traccar
  Client or a tracker through Traccar, operations.md 1.1).

``;`` works as the separator too (spreadsheets set to French), UTF-8 with or without a BOM,
blank lines ignored. Every line is checked before anything is written; each problem is one
French line naming the file, the line and the column, and nothing is registered.

The PINs are hashed here, in a few threads (argon2 releases the GIL): two hashes per device
are most of the cost of a registration.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from alert_server.devices.service import DeviceInputError, NewDevice, hash_pin

REQUIRED = ("device_id", "worker", "role", "phone", "pin", "duress_pin")
OPTIONAL = ("site_lat", "site_lon", "site_label", "gateway")
COLUMNS = REQUIRED + OPTIONAL
GATEWAYS = ("mqtt", "osmand")
# Beyond this many, the remaining errors are counted, not listed.
MAX_LISTED_ERRORS = 50

# NewDevice.validate() names the command's options; a CSV line names its columns.
_FIELD_TO_COLUMN = {
    "DEVICE_ID": "device_id",
    "--worker": "worker",
    "--role": "role",
    "--phone": "phone",
    "--pin": "pin",
    "--duress-pin": "duress_pin",
    "--site-lat/--site-lon": "site_lat/site_lon",
    "--site-lat": "site_lat",
    "--site-lon": "site_lon",
}


class BulkImportError(ValueError):
    """The file cannot be imported; ``errors`` are French lines ``FILE:LINE: …``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Row:
    line: int
    new: NewDevice  # validated: phone in E.164, worker name stripped
    gateway: str  # "mqtt" or "osmand"


def column_message(exc: DeviceInputError) -> str:
    """``--phone: '+331' n'est pas…`` → ``colonne phone : '+331' n'est pas…``."""
    field, sep, detail = str(exc).partition(": ")
    column = _FIELD_TO_COLUMN.get(field)
    if not sep or column is None:
        return str(exc)
    return f"colonne {column} : {detail}"


def _delimiter(header: str) -> str:
    return ";" if ";" in header and "," not in header else ","


def parse_devices(text: str, source: str) -> list[Row]:
    """Every device of the file, or ``BulkImportError`` listing every problem."""
    errors: list[str] = []

    def err(line: int, message: str) -> None:
        errors.append(f"{source}:{line}: {message}")

    text = text.removeprefix("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise BulkImportError(
            [f"{source}:1: fichier vide (ligne d'en-tête attendue : {','.join(REQUIRED)})"]
        )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first))
    header: list[str] = []
    header_line = 0
    for record in reader:
        if any(cell.strip() for cell in record):
            header = [cell.strip().lower() for cell in record]
            header_line = reader.line_num
            break
    for name in header:
        if name not in COLUMNS:
            err(header_line, f"colonne inconnue « {name} » (colonnes : {', '.join(COLUMNS)})")
    for name in {n for n in header if header.count(n) > 1}:
        err(header_line, f"colonne « {name} » en double")
    for name in REQUIRED:
        if name not in header:
            err(header_line, f"colonne « {name} » manquante (obligatoires : {', '.join(REQUIRED)})")
    if errors:
        raise BulkImportError(errors)

    rows: list[Row] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            err(
                line,
                f"{len(record)} champs au lieu de {len(header)} (en-tête ligne {header_line})",
            )
            continue
        values = {name: cell.strip() for name, cell in zip(header, record, strict=True)}
        site: dict[str, float | None] = {"site_lat": None, "site_lon": None}
        bad = False
        for name in site:
            raw = values.get(name, "")
            if raw:
                try:
                    site[name] = float(raw.replace(",", "."))
                except ValueError:
                    err(line, f"colonne {name} : {raw!r} n'est pas un nombre")
                    bad = True
        gateway = values.get("gateway", "").lower() or "mqtt"
        if gateway not in GATEWAYS:
            err(line, f"colonne gateway : {gateway!r} n'est pas l'une de {', '.join(GATEWAYS)}")
            bad = True
        if bad:
            continue
        new = NewDevice(
            values["device_id"],
            values["worker"],
            values["role"],
            values["phone"],
            values["pin"],
            values["duress_pin"],
            site["site_lat"],
            site["site_lon"],
            values.get("site_label") or None,
        )
        try:
            new = new.validate()
        except DeviceInputError as exc:
            err(line, column_message(exc))
            continue
        if new.device_id in seen:
            err(
                line,
                f"colonne device_id : {new.device_id!r} déjà présent ligne {seen[new.device_id]}",
            )
            continue
        seen[new.device_id] = line
        rows.append(Row(line, new, gateway))
    if not rows and not errors:
        err(header_line, "aucun boîtier après la ligne d'en-tête")
    if errors:
        if len(errors) > MAX_LISTED_ERRORS:
            more = len(errors) - MAX_LISTED_ERRORS
            errors = [*errors[:MAX_LISTED_ERRORS], f"{source}: … et {more} autres erreurs"]
        raise BulkImportError(errors)
    return rows


def hash_pins(rows: list[Row], workers: int | None = None) -> list[tuple[str, str]]:
    """(PIN hash, duress PIN hash) of every row, in order, hashed in a few threads."""
    n = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="pin-hash") as pool:
        return list(pool.map(lambda r: (hash_pin(r.new.pin), hash_pin(r.new.duress_pin)), rows))
