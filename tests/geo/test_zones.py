"""Police/gendarmerie zone CSV: the official and the sample formats, and bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alert_server.geo.boundaries import GeoDataError
from alert_server.geo.zones import ZoneSet, parse_zones

OFFICIAL = (
    "code_commune,libelle_commune,institution,id_service,service,code_postal,codes_postaux\n"
    "33122,CESTAS,GN,12345,BRIGADE TERRITORIALE AUTONOME DE CESTAS,33610,33610\n"
    '33009,ARCACHON,PN,67890,"COMMISSARIAT DE POLICE D\'ARCACHON",33120,33120-33121\n'
    "2A004,AJACCIO,PN,11111,COMMISSARIAT D'AJACCIO,20000,20000-20090\n"
    "1001,L'ABERGEMENT-CLEMENCIAT,GN,22222,BRIGADE DE CHATILLON,01400,01400\n"
)


def test_sample_file(zones_set: ZoneSet) -> None:
    assert zones_set.format == "exemple"
    zones = {z.code_commune: z for z in zones_set.zones}
    assert len(zones) == 378
    assert {c for c, z in zones.items() if z.departement == "53" and z.institution == "PN"} == {
        "53130",
        "53034",
        "53054",
        "53201",
    }
    assert all(z.institution == "PN" for z in zones.values() if z.departement != "53")
    assert zones["53130"].libelle_commune == "Laval"


def test_official_format(tmp_path: Path) -> None:
    path = tmp_path / "competence.csv"
    path.write_text(OFFICIAL, encoding="utf-8")
    parsed = parse_zones(path)
    assert parsed.format == "officiel"
    zones = {z.code_commune: z for z in parsed.zones}
    assert zones["33122"].institution == "GN"
    assert zones["33122"].service == "BRIGADE TERRITORIALE AUTONOME DE CESTAS"
    assert zones["33009"].id_service == "67890" and zones["33009"].code_postal == "33120"
    assert zones["2A004"].departement == "2A"
    # A leading zero lost by a spreadsheet is restored.
    assert zones["01001"].departement == "01"


def test_official_format_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "competence.csv"
    path.write_bytes(b"\xef\xbb\xbf" + OFFICIAL.replace("\n", "\r\n").encode("utf-8"))
    assert len(parse_zones(path).zones) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"zones\.csv:1: fichier vide"),
        (
            "code;nom;force\n53130;Laval;PN\n",
            r"zones\.csv:1: colonne\(s\) code_commune, institution",
        ),
        (
            "code_commune;libelle_commune;institution;code_departement\n53130;Laval;PM;53\n",
            r"zones\.csv:2: institution « PM » inconnue \(attendu PN ou GN\)",
        ),
        (
            "code_commune;libelle_commune;institution;code_departement\n"
            "53130;Laval;PN;53\n5313X;Laval;PN;53\n",
            r"zones\.csv:3: code_commune « 5313X » invalide",
        ),
        (
            "code_commune;libelle_commune;institution;code_departement\n53130;Laval;PN;54\n",
            r"zones\.csv:2: code_departement « 54 » ne correspond pas",
        ),
        (
            "code_commune;libelle_commune;institution;code_departement\n53130;Laval;PN\n",
            r"zones\.csv:2: 3 colonne\(s\) au lieu de 4",
        ),
        (
            "code_commune;libelle_commune;institution;code_departement\n"
            "53130;Laval;PN;53\n53034;Bonchamp;PN;53\n53130;Laval;GN;53\n",
            r"zones\.csv:4: commune 53130 déjà en PN à la ligne 2, ici en GN",
        ),
        ("code_commune;libelle_commune;institution;code_departement\n", r"aucune commune"),
    ],
)
def test_bad_zone_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "zones.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GeoDataError) as err:
        parse_zones(path)
    assert "\n" not in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)
