"""Secrets typed by a person (passwords, PINs): read from a prompt, or from standard input
when it is not a terminal (scripts, provisioning). Never required on the command line, where
every local user could read them in ``ps`` and the shell history keeps them."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO


class SecretInputError(ValueError):
    """No secret could be read; the message is French and names the secret."""


def read_secret(
    label: str,
    *,
    confirm: bool = True,
    stdin: TextIO | None = None,
    prompt: bool | None = None,
) -> str:
    """The secret called ``label`` (French, e.g. "Mot de passe").

    On a terminal: asked without echo, twice when ``confirm``. Otherwise: one line read from
    standard input (its end of line removed), so that ``printf '%s\\n' "$PASS" | vigie …``
    works without the secret ever being an argument."""
    stream = stdin if stdin is not None else sys.stdin
    interactive = stream.isatty() if prompt is None else prompt
    if interactive:
        first = getpass.getpass(f"{label} : ")
        if confirm and getpass.getpass(f"{label} (confirmation) : ") != first:
            raise SecretInputError(f"{label} : les deux saisies diffèrent")
        return first
    line = stream.readline()
    if not line:
        raise SecretInputError(f"{label} : rien lu sur l'entrée standard")
    return line.rstrip("\r\n")
