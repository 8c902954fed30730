"""Checked boundary files kept between runs, keyed by the files' hashes.

Why: parsing and checking the communes GeoJSON (46 MB, 35,000 polygons) takes 5 to 15 s, and
the demonstration (a fresh database every run) and every first start of a server paid it each
time for the same file. The result of ``parse_boundaries`` is stored once in the user's cache
folder (``$XDG_CACHE_HOME/vigie/geo``, else ``~/.cache/vigie/geo``) as plain data: codes,
names, repair notes and each geometry's WKB, with a SHA-256 of everything.

The entry's name holds the SHA-256 of the boundary file, of the code that checks it and the
GEOS version, so a changed file (or checker) is simply a different entry and is parsed again.
An entry that is unreadable, truncated, altered or inconsistent in any way is ignored and the
file parsed again: the cache can cost a parse, never return other data than the parse would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import shapely

from alert_server.geo import boundaries
from alert_server.geo.boundaries import Area, BoundaryKind, BoundarySet, file_sha256

log = logging.getLogger(__name__)

_MAGIC = b"VIGIE-GEO-PARSE\x01"
_HEADER_LEN = struct.Struct(">Q")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "vigie" / "geo"


def _checker_fingerprint() -> str:
    """What else decides the parse result: the checking code and the geometry library."""
    h = hashlib.sha256()
    h.update(Path(boundaries.__file__).read_bytes())
    h.update(shapely.__version__.encode())
    h.update(shapely.geos_version_string.encode())
    return h.hexdigest()[:16]


def entry_path(cache_dir: Path, kind: BoundaryKind, file_digest: str) -> Path:
    return cache_dir / f"{kind}-{file_digest}-{_checker_fingerprint()}.bin"


def _encode(result: BoundarySet) -> bytes:
    wkbs = [shapely.to_wkb(a.geometry) for a in result.areas]
    payload = b"".join(wkbs)
    header = json.dumps(
        {
            "kind": result.kind,
            "sha256": result.sha256,
            "codes": [a.code for a in result.areas],
            "noms": [a.nom for a in result.areas],
            "wkb_lengths": [len(w) for w in wkbs],
            "repaired": list(result.repaired),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        },
        ensure_ascii=False,
    ).encode()
    return _MAGIC + _HEADER_LEN.pack(len(header)) + header + payload


def _decode(raw: bytes, kind: BoundaryKind, file_digest: str, source: str) -> BoundarySet:
    """The stored result, or ValueError for anything not exactly as written."""
    if not raw.startswith(_MAGIC):
        raise ValueError("magic")
    start = len(_MAGIC) + _HEADER_LEN.size
    if len(raw) < start:
        raise ValueError("truncated header")
    (hlen,) = _HEADER_LEN.unpack_from(raw, len(_MAGIC))
    header: Any = json.loads(raw[start : start + hlen])
    payload = memoryview(raw)[start + hlen :]
    if header["kind"] != kind or header["sha256"] != file_digest:
        raise ValueError("another file")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError("payload checksum")
    codes, noms, lengths = header["codes"], header["noms"], header["wkb_lengths"]
    if not (len(codes) == len(noms) == len(lengths)) or sum(lengths) != len(payload):
        raise ValueError("inconsistent lengths")
    pieces, at = [], 0
    for n in lengths:
        pieces.append(bytes(payload[at : at + n]))
        at += n
    geoms = shapely.from_wkb(pieces)
    areas = tuple(Area(str(c), str(n), g) for c, n, g in zip(codes, noms, geoms, strict=True))
    return BoundarySet(
        kind=kind,
        source=source,
        sha256=file_digest,
        areas=areas,
        repaired=tuple(str(r) for r in header["repaired"]),
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # readers see the whole entry or none
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_boundaries_cached(
    path: Path, kind: BoundaryKind, *, cache_dir: Path | None = None
) -> BoundarySet:
    """``parse_boundaries(path, kind)``, from the cache when this exact file was parsed before.

    Errors in the file are raised as by ``parse_boundaries`` (a refused file is never cached);
    problems with the cache itself only ever mean a parse.
    """
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        digest = file_sha256(path)
    except OSError:
        return boundaries.parse_boundaries(path, kind)  # its own French error
    entry = entry_path(folder, kind, digest)
    try:
        raw = entry.read_bytes()
    except OSError:
        raw = None
    if raw is not None:
        try:
            return _decode(raw, kind, digest, path.name)
        except Exception as exc:  # any damage: parse again, never trust it
            log.warning("geo parse cache entry ignored", extra={"entry": str(entry), "err": exc})
    result = boundaries.parse_boundaries(path, kind)
    if result.sha256 == digest:  # the file did not change while it was being read
        try:
            _write(entry, _encode(result))
        except OSError as exc:
            log.warning("geo parse cache not written", extra={"entry": str(entry), "err": exc})
    return result
