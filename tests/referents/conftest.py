"""The directory of operations.md, as a fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from alert_server.referents.parser import parse_directory
from alert_server.referents.schemas import Directory

# Exactly the example of spec/operations.md.
SPEC_EXAMPLE = """\
version: 1
departements:
  "13":
    PN:                        # zone police nationale
      - name: "Référent santé DDSP 13"
        phone: "+33491000013"
        hours: "mon-fri 08:00-19:00"   # Europe/Paris; absent = always reachable
      - name: "CIC Marseille"
        phone: "+33491000113"
    GN:                        # zone gendarmerie nationale
      - name: "Référent santé groupement 13"
        phone: "+33491000213"
  "53":
    GN:
      - name: "Référent santé groupement 53"
        phone: "+33243000053"
national_fallback:             # used when nothing else is reachable or the position is unknown
  - name: "Permanence nationale"
    phone: "+33100000000"
escalation:                    # optional; this is the default policy
  steps:
    - {after_s: 0,   contact: 1, channels: [sms]}
    - {after_s: 30,  contact: 1, channels: [voice]}
    - {after_s: 90,  contact: 2, channels: [sms, voice]}
    - {after_s: 150, contact: all, channels: [sms, voice]}
  repeat: 1
"""

# 13 GN only at night and on weekdays; 84 PN/GN for the ambiguous-border stories.
NIGHTS_AND_BORDER = """\
version: 1
departements:
  "13":
    PN:
      - name: "Référent santé DDSP 13"
        phone: "+33491000013"
        hours: "mon-fri 08:00-19:00"
      - name: "CIC Marseille"
        phone: "+33491000113"
    GN:
      - name: "Référent GN 13 jour"
        phone: "+33491000213"
        hours: "mon-fri 08:00-19:00"
      - name: "Référent GN 13 nuit"
        phone: "+33491000313"
        hours: "mon-fri 19:00-08:00"
  "84":
    GN:
      - name: "Référent santé groupement 84"
        phone: "+33490000084"
    PN:
      - name: "Référent santé DDSP 84"
        phone: "+33490000184"
  "53":
    GN:
      - name: "Référent santé groupement 53"
        phone: "+33243000053"
national_fallback:
  - name: "Permanence nationale"
    phone: "+33100000000"
"""


@pytest.fixture
def spec_directory() -> Directory:
    return parse_directory(SPEC_EXAMPLE, "annuaire.yaml")


@pytest.fixture
def border_directory() -> Directory:
    return parse_directory(NIGHTS_AND_BORDER, "annuaire.yaml")


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "annuaire.yaml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")
    return path
