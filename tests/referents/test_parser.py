"""Directory YAML: the spec example, and every error reported at once with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from alert_server.referents.parser import load_directory_file, parse_directory
from alert_server.referents.schemas import DirectoryError
from dispatch.policy import DEFAULT_POLICY
from tests.referents.conftest import SPEC_EXAMPLE


def test_spec_example(spec_file: Path) -> None:
    d = load_directory_file(spec_file)
    assert set(d.departements) == {"13", "53"}
    assert [c.name for c in d.departements["13"]["PN"]] == [
        "Référent santé DDSP 13",
        "CIC Marseille",
    ]
    first = d.departements["13"]["PN"][0]
    assert first.phone == "+33491000013" and first.line == 5
    assert first.hours is not None and first.hours.text == "mon-fri 08:00-19:00"
    assert d.departements["13"]["PN"][1].hours is None
    assert d.departements["53"]["GN"][0].phone == "+33243000053"
    assert [c.phone for c in d.national_fallback] == ["+33100000000"]
    assert d.escalation == DEFAULT_POLICY
    assert d.source == str(spec_file) and len(d.sha256) == 64


def test_unquoted_codes_and_phones_stay_text() -> None:
    # YAML 1.1 would read 01 as the integer 1 and +33… as an integer.
    d = parse_directory(
        "departements:\n"
        "  01:\n"
        "    GN:\n"
        "      - name: Référent 01\n"
        "        phone: +33474000001\n"
        "  2A:\n"
        "    PN:\n"
        "      - {name: CIC Ajaccio, phone: +33495000020, hours: mon-fri 08:00-19:00}\n"
        "national_fallback:\n"
        "  - {name: Permanence, phone: +33100000000}\n"
    )
    assert set(d.departements) == {"01", "2A"}
    assert d.departements["01"]["GN"][0].phone == "+33474000001"


def test_escalation_block() -> None:
    text = SPEC_EXAMPLE.replace("after_s: 150", "after_s: 200").replace("repeat: 1", "repeat: 2")
    d = parse_directory(text)
    assert d.escalation.repeat == 2 and d.escalation.steps[-1].after_s == 200
    assert d.escalation.steps[-1].contact == "all"


BAD = """\
version: 1
departements:
  "13":
    PN:
      - name: "Référent santé DDSP 13"
        phone: "+3349100001"
        hours: "mon-fri 08:00-25:00"
      - name: "CIC Marseille"
        phone: "04 91 00 01 13"
    PM:
      - name: "Police municipale"
        phone: "+33491000999"
  "20":
    GN:
      - name: "Corse"
        phone: "+33495000000"
  "53":
    GN:
      - name: ""
        phone: "+33243000053"
        hour: "mon-fri 08:00-19:00"
      - phone: "+33243000153"
  "53":
    PN: []
national_fallback:
  - name: "Permanence nationale"
    phone: "+33100000000"
    hours: "mon-fri 08:00-19:00"
escalation:
  steps:
    - {after_s: 30, contact: 1, channels: [sms]}
    - {after_s: 0, contact: 0, channels: [fax]}
  repeat: -1
colour: blue
"""


def test_every_error_at_once_with_its_line() -> None:
    with pytest.raises(DirectoryError) as err:
        parse_directory(BAD, "annuaire.yaml")
    errors = err.value.errors
    expected = [
        ("annuaire.yaml:6:", "numéro « +3349100001 » invalide"),
        ("annuaire.yaml:7:", "hours invalide"),
        ("annuaire.yaml:9:", "numéro « 04 91 00 01 13 » invalide"),
        ("annuaire.yaml:10:", "force « PM » inconnue"),
        ("annuaire.yaml:13:", "département « 20 » inconnu (la Corse est « 2A » ou « 2B »)"),
        ("annuaire.yaml:19:", "« name » doit être un texte non vide"),
        ("annuaire.yaml:21:", "clé « hour » inconnue"),
        ("annuaire.yaml:22:", "« name » manquant"),
        ("annuaire.yaml:23:", "clé « 53 » en double (déjà ligne 17)"),
        ("annuaire.yaml:28:", "« hours » n'est pas permis ici"),
        ("annuaire.yaml:32:", "escalation.steps.1.contact : contact doit valoir 1 ou plus"),
        ("annuaire.yaml:32:", "escalation.steps.1.channels.0 : valeur attendue : 'sms' or 'voice'"),
        ("annuaire.yaml:33:", "escalation.repeat : doit être supérieur ou égal à 0"),
        ("annuaire.yaml:34:", "clé « colour » inconnue"),
    ]
    for prefix, fragment in expected:
        assert any(e.startswith(prefix) and fragment in e for e in errors), (
            prefix,
            fragment,
            errors,
        )
    assert len(errors) == len(expected), errors
    # One line each, in file order.
    assert all("\n" not in e for e in errors)
    lines = [int(e.split(":")[1]) for e in errors]
    assert lines == sorted(lines)


def test_escalation_steps_out_of_order() -> None:
    text = SPEC_EXAMPLE.replace("after_s: 150", "after_s: 10")
    with pytest.raises(DirectoryError) as err:
        parse_directory(text, "a.yaml")
    assert err.value.errors == [
        "a.yaml:21: escalation.steps : les étapes doivent être dans l'ordre des after_s"
    ]


def test_syntax_error_has_its_line() -> None:
    with pytest.raises(DirectoryError) as err:
        parse_directory("version: 1\ndepartements: x: y\nnational_fallback: []\n", "a.yaml")
    assert len(err.value.errors) == 1
    assert err.value.errors[0].startswith("a.yaml:2: YAML invalide")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "a.yaml:1: fichier vide"),
        ("- a\n- b\n", "a.yaml:1: annuaire : un dictionnaire"),
        ("departements: {}\n", "« national_fallback » manquant"),
        ("national_fallback: [{name: A, phone: '+33100000000'}]\n", "« departements » manquant"),
        (
            "version: 2\ndepartements: {}\nnational_fallback: [{name: A, phone: '+33100000000'}]\n",
            "a.yaml:1: version : seule la version 1",
        ),
        (
            "departements: {}\nnational_fallback: []\n",
            "a.yaml:2: national_fallback : liste vide",
        ),
        (
            "departements:\n  '13': {}\nnational_fallback: [{name: A, phone: '+33100000000'}]\n",
            "a.yaml:2: département 13 : aucune force",
        ),
    ],
)
def test_structural_errors(text: str, fragment: str) -> None:
    with pytest.raises(DirectoryError) as err:
        parse_directory(text, "a.yaml")
    assert any(fragment in e for e in err.value.errors), err.value.errors


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("departements: {}\nnom: é\n".encode("latin-1"))
    with pytest.raises(DirectoryError, match="UTF-8"):
        load_directory_file(path)
