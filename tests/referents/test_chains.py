"""Chain selection: hours, forces, national fallback, several départements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from alert_server.referents.chains import chain_for, chains_for_position, default_force
from alert_server.referents.schemas import Directory
from dispatch.schemas import Chain

TUESDAY_10H = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # 10:00 Paris
TUESDAY_22H = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # 22:00 Paris
SATURDAY_10H = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
FALLBACK = "+33100000000"


def phones(chain: Chain) -> list[str]:
    return [c.phone for c in chain.contacts]


def test_office_hours_filter(spec_directory: Directory) -> None:
    day = chain_for(spec_directory, "13", "PN", TUESDAY_10H)
    assert (day.departement, day.force) == ("13", "PN")
    assert phones(day) == ["+33491000013", "+33491000113", FALLBACK]
    night = chain_for(spec_directory, "13", "PN", TUESDAY_22H)
    assert phones(night) == ["+33491000113", FALLBACK]
    assert phones(chain_for(spec_directory, "13", "PN", SATURDAY_10H)) == [
        "+33491000113",
        FALLBACK,
    ]


def test_force_choice(spec_directory: Directory) -> None:
    assert phones(chain_for(spec_directory, "13", "GN", TUESDAY_10H)) == ["+33491000213", FALLBACK]
    # Unknown zone: PN first when both exist, the only force otherwise.
    assert default_force(spec_directory, "13") == "PN"
    assert default_force(spec_directory, "53") == "GN"
    assert default_force(spec_directory, "75") is None
    unknown = chain_for(spec_directory, "13", None, TUESDAY_10H)
    assert unknown.force == "PN" and phones(unknown)[0] == "+33491000013"
    # Zone PN (Laval) but the directory only knows GN in 53: the GN referent, not nobody.
    laval = chain_for(spec_directory, "53", "PN", TUESDAY_10H)
    assert (laval.force, phones(laval)) == ("GN", ["+33243000053", FALLBACK])


def test_national_fallback_only(spec_directory: Directory) -> None:
    nowhere = chain_for(spec_directory, None, None, TUESDAY_10H)
    assert (nowhere.departement, nowhere.force, phones(nowhere)) == (None, None, [FALLBACK])
    no_entry = chain_for(spec_directory, "75", "PN", TUESDAY_10H)
    assert (no_entry.departement, phones(no_entry)) == ("75", [FALLBACK])


def test_same_phone_listed_twice_is_called_once(spec_directory: Directory) -> None:
    from dataclasses import replace

    fallback = spec_directory.departements["13"]["PN"][1]  # CIC Marseille as national desk
    d = replace(spec_directory, national_fallback=(fallback, *spec_directory.national_fallback))
    assert phones(chain_for(d, "13", "PN", TUESDAY_10H)) == [
        "+33491000013",
        "+33491000113",
        FALLBACK,
    ]


@dataclass(frozen=True)
class _Pos:
    departements: tuple[str, ...]
    forces: dict[str, str | None]

    def force_for(self, departement: str) -> str | None:
        return self.forces.get(departement)


def test_chains_for_position(border_directory: Directory) -> None:
    ambiguous = _Pos(("13", "84"), {"13": "GN", "84": "PN"})
    chains = chains_for_position(border_directory, ambiguous, TUESDAY_22H)
    assert [(c.departement, c.force) for c in chains] == [("13", "GN"), ("84", "PN")]
    assert phones(chains[0]) == ["+33491000313", FALLBACK]  # the night referent
    assert phones(chains[1]) == ["+33490000184", FALLBACK]
    for nothing in (None, _Pos((), {})):
        only = chains_for_position(border_directory, nothing, TUESDAY_22H)
        assert len(only) == 1 and phones(only[0]) == [FALLBACK] and only[0].departement is None
