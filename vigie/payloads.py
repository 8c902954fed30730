"""Wire models of protocol.md: strict pydantic models for every uplink and downlink message.

Unknown fields are accepted (the protocol may grow optional fields) and reported by
``unknown_fields`` so that they can be counted.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from vigie.timeutil import rfc3339
from vigie.vocabulary import DEVICE_KINDS, DownlinkType

MAX_PAYLOAD_BYTES = 4096
# Plain strings: what the wire carries (the enum members compare equal to them).
KNOWN_KINDS: frozenset[str] = frozenset(k.value for k in DEVICE_KINDS)
POS_SOURCES = frozenset({"gps", "wifi", "cell", "fixed", "manual"})


class PayloadError(ValueError):
    """A message that cannot be read as what its topic says; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        # The first field at fault, when there is one ("memo", "pos.lat", …).
        self.field = field


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _parse_ts(value: object) -> datetime:
    """Any RFC 3339 date-time (protocol.md 1.1: ``Z``, ``z`` or a numeric offset), as UTC."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("timestamp must be an RFC 3339 date-time with Z or an offset")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    frac = re.search(r"\.(\d+)", text)
    if frac is not None and len(frac.group(1)) > 6:
        # Python reads at most microseconds; RFC 3339 allows any precision.
        text = text[: frac.start(1) + 6] + text[frac.end(1) :]
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"timestamp is not RFC 3339: {value!r}") from exc


# An RFC 3339 date-time on the wire, an aware UTC datetime in Python.
Timestamp = Annotated[datetime, BeforeValidator(_parse_ts)]

Number = StrictInt | StrictFloat


def _finite(v: float) -> float:
    try:
        finite = math.isfinite(v)
    except OverflowError:  # an integer literal too large for a float
        finite = False
    if not finite:
        raise ValueError("must be a finite number")
    return v


Finite = Annotated[Number, AfterValidator(_finite)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class Position(_Msg):
    lat: Annotated[Finite, Field(ge=-90, le=90)]
    lon: Annotated[Finite, Field(ge=-180, le=180)]
    acc_m: Annotated[Finite, Field(ge=0, le=1_000_000)] | None = None
    ts: Timestamp | None = None
    src: Literal["gps", "wifi", "cell", "fixed", "manual"] | None = None


class Cell(_Msg):
    mcc: Annotated[StrictInt, Field(ge=0, le=999)]
    mnc: Annotated[StrictInt, Field(ge=0, le=999)]
    lac: Annotated[StrictInt, Field(ge=0)]
    cid: Annotated[StrictInt, Field(ge=0)]
    rssi: Annotated[StrictInt, Field(ge=-200, le=0)] | None = None


class Wifi(_Msg):
    bssid: Annotated[StrictStr, Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    rssi: Annotated[StrictInt, Field(ge=-200, le=0)] | None = None


class AlertMsg(_Msg):
    v: Literal[1]
    alert_id: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
    kind: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    ts: Timestamp
    pos: Position | None = None
    cells: list[Cell] | None = None
    wifi: list[Wifi] | None = None
    batt: Annotated[StrictInt, Field(ge=0, le=100)] | None = None


class CancelMsg(_Msg):
    v: Literal[1]
    alert_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    ts: Timestamp
    pin: Annotated[StrictStr, Field(min_length=1, max_length=32)]


SESSION_ACTIONS = ("start", "extend", "checkin", "end")


class SessionMsg(_Msg):
    v: Literal[1]
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    action: Literal["start", "extend", "checkin", "end"]
    ts: Timestamp
    expected_end: Timestamp | None = None
    memo: Annotated[StrictStr, Field(max_length=500)] | None = None
    pos: Position | None = None


class HeartbeatMsg(_Msg):
    v: Literal[1]
    ts: Timestamp
    batt: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    charging: StrictBool | None = None
    pos: Position | None = None


class PosMsg(_Msg):
    v: Literal[1]
    ts: Timestamp
    pos: Position


class StatusMsg(_Msg):
    v: Literal[1]
    state: Literal["online", "offline"]


UPLINK_MODELS: dict[str, type[_Msg]] = {
    "alert": AlertMsg,
    "cancel": CancelMsg,
    "session": SessionMsg,
    "hb": HeartbeatMsg,
    "pos": PosMsg,
    "status": StatusMsg,
}

CommandType = DownlinkType


def command(type_: CommandType, at: datetime, **fields: Any) -> bytes:
    """A downlink ``cmd`` payload: ``{"v":1,"type":…,…,"ts":…}``, None fields left out."""
    body: dict[str, Any] = {"v": 1, "type": type_}
    body.update({k: v for k, v in fields.items() if v is not None})
    body["ts"] = rfc3339(at)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(payload: bytes) -> dict[str, Any]:
    """Parse a payload as a JSON object, refusing NaN/Infinity and oversized input."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("oversized", f"payload of {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("bad_json", f"not UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("bad_json", "JSON nested too deeply") from exc
    if not isinstance(data, dict):
        raise PayloadError("bad_json", "payload is not a JSON object")
    # Escaped NUL or lone surrogates ("\u0000", "\ud800") decode to strings no database
    # column can hold (PostgreSQL refuses NUL, UTF-8 refuses surrogates): refused here, by
    # name, rather than failing the transaction later. Only payloads with an escape are walked.
    if b"\\u" in payload:
        try:
            storable = _storable(data)
        except RecursionError as exc:
            raise PayloadError("bad_json", "JSON nested too deeply") from exc
        if not storable:
            raise PayloadError("bad_json", "text with NUL (\\u0000) or an unpaired surrogate")
    return data


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        return value == db_text(value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


def db_text(text: str) -> str:
    """``text`` as any database can store it: NUL and unpaired surrogates become U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def parse_uplink(suffix: str, payload: bytes) -> _Msg:
    """Decode and validate one uplink message; raises PayloadError with a readable reason."""
    data = decode_json(payload)
    model = UPLINK_MODELS[suffix]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise PayloadError("invalid", f"{where}: {first['msg']}", field=where) from exc
