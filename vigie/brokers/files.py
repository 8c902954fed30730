"""Mosquitto's password and ACL files, maintained by ``vigie devices add/revoke``.

Written in Mosquitto 2.0's own formats so the stock broker reads them, atomically (write to a
temporary file, then rename) so a broker reload never sees half a file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import tempfile
from pathlib import Path

from vigie.topics import PREFIX, PROBE_PREFIX, SERVER_USERNAME, SERVERS_PREFIX

# Mosquitto 2.0 "$7$" hashes: PBKDF2-HMAC-SHA512. 2.0 itself uses 101 iterations; 2.1 uses 1000.
# The passwords are 32 random characters, so the iteration count is not what protects them.
_ITERATIONS = 1000
_SALT_BYTES = 12


def reserved_for_servers(name: str) -> bool:
    """Server accounts and MQTT client ids are ``vigie-server`` or ``vigie-server-…``; no device
    may take such a name, because on the devices' listener a device's client id is its name
    and a client id taken by another connection closes the first one (and may discard its
    session)."""
    lowered = name.lower()
    return lowered == SERVER_USERNAME or lowered.startswith(SERVER_USERNAME + "-")


def mosquitto_hash(password: str, *, iterations: int = _ITERATIONS) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    _, kind, iterations, salt, digest = encoded.split("$")
    if kind != "7":
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return secrets.compare_digest(base64.b64encode(got).decode(), digest)


def generate_password() -> str:
    """A strong MQTT password (192 bits), printable and free of characters shells mangle."""
    return secrets.token_urlsafe(24)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # Mosquitto may run as another user; the files hold only hashes and topic rules.
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_passwd(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#") and ":" in line:
                user, encoded = line.split(":", 1)
                entries[user] = encoded
    return entries


def write_passwd(path: Path, entries: dict[str, str]) -> None:
    _atomic_write(path, "".join(f"{u}:{h}\n" for u, h in sorted(entries.items())))


def set_password(path: Path, username: str, password: str) -> None:
    entries = read_passwd(path)
    entries[username] = mosquitto_hash(password)
    write_passwd(path, entries)


def remove_user(path: Path, username: str) -> bool:
    entries = read_passwd(path)
    found = entries.pop(username, None) is not None
    write_passwd(path, entries)
    return found


# What the servers' account(s) may do: read every uplink, write every command.
_SERVER_RULES = f"""\
user {SERVER_USERNAME}
topic read {PREFIX}/+/alert
topic read {PREFIX}/+/cancel
topic read {PREFIX}/+/session
topic read {PREFIX}/+/hb
topic read {PREFIX}/+/pos
topic read {PREFIX}/+/status
topic write {PREFIX}/+/cmd
topic read $SYS/#
# The subscription probe (alert_server/ingest/probe.py): each server sends itself a message.
topic readwrite {PROBE_PREFIX}/#
# Server presence and last wills (alert_server/ingest/rescue.py): a survivor resumes the
# session of a server that died, under that server's client id, on this same account.
topic readwrite {SERVERS_PREFIX}/#
"""

_ACL_HEADER = f"""\
# Vigie broker ACL for the DEVICES' listener (Mosquitto 2.0 acl_file). Maintained by
# `vigie devices add/revoke`: edits below the "revoked" marker are overwritten.
#
# The server account's rules are also here so that a broker still configured with one
# password and ACL file for both listeners (per_listener_settings false, before Vigie 1.1)
# keeps delivering alerts to the server. With broker_config/ (one file pair per listener) the
# server account is not in this listener's password file, so these lines grant nothing here.
{_SERVER_RULES}
# Every device: only its own uplink topics and its own command topic. %u is the MQTT username,
# which the broker also uses as the client id (use_username_as_clientid), and is the device_id.
pattern write {PREFIX}/%u/alert
pattern write {PREFIX}/%u/cancel
pattern write {PREFIX}/%u/session
pattern write {PREFIX}/%u/hb
pattern write {PREFIX}/%u/pos
pattern write {PREFIX}/%u/status
pattern read {PREFIX}/%u/cmd
"""
_REVOKED_MARKER = "# --- revoked devices (deny is checked before any grant) ---"
# Written by the server at start from VIGIE_BUTTONS_FILE (alert_server/gateways/buttons.py).
_BUTTONS_MARKER = (
    "# --- MQTT buttons (VIGIE_BUTTONS_FILE): each device account, its button's topics ---"
)


def render_acl(revoked: list[str], buttons: str = "") -> str:
    """The devices' ACL (``VIGIE_BROKER_ACL_FILE``), with a deny block per revoked device."""
    lines = [_ACL_HEADER, _REVOKED_MARKER]
    for device_id in sorted(set(revoked)):
        lines.append(f"user {device_id}\ntopic deny {PREFIX}/{device_id}/#\ntopic deny #")
    if buttons:
        lines += [_BUTTONS_MARKER, buttons.rstrip("\n")]
    return "\n".join(lines) + "\n"


def read_buttons_block(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    return text.split(_BUTTONS_MARKER, 1)[1].lstrip("\n") if _BUTTONS_MARKER in text else ""


def render_servers_acl(extra: str = "") -> str:
    """The servers' listener ACL (``broker_config/servers.acl``): the server account only
    (``extra``: the read rules of the configured MQTT buttons, after the server's own)."""
    return (
        "# Vigie broker ACL for the SERVERS' listener (Mosquitto 2.0 acl_file): only server\n"
        "# accounts log in there (their own password file). Generated from\n"
        "# vigie/brokers/files.py; tests/integration/test_listeners.py checks it.\n"
        + _SERVER_RULES
        + extra
    )


def write_servers_acl(path: Path, extra: str = "") -> None:
    _atomic_write(path, render_servers_acl(extra))


def read_revoked(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if _REVOKED_MARKER not in text:
        return []
    tail = text.split(_REVOKED_MARKER, 1)[1].split(_BUTTONS_MARKER, 1)[0]
    return [ln.split()[1] for ln in tail.splitlines() if ln.startswith("user ")]


def write_acl(path: Path, revoked: list[str], buttons: str | None = None) -> None:
    """``buttons``: the buttons' block (None: keep the one the file has)."""
    _atomic_write(
        path, render_acl(revoked, read_buttons_block(path) if buttons is None else buttons)
    )


def reload_broker(pid_file: Path | None) -> bool:
    """Ask Mosquitto to re-read its password and ACL files (SIGHUP). False if not possible."""
    if pid_file is None or not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True
