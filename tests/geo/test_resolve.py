"""Position resolution: sources in order, flags, forces, ambiguous borders → several chains."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from alert_server.geo.index import GeoIndex
from alert_server.geo.resolve import (
    FRESH_FIX_S,
    departements_to_add,
    needs_locate,
    resolve_position,
)
from alert_server.geo.schemas import (
    Fix,
    PositionInputs,
    ProviderFix,
    RadioScan,
    ResolvedPosition,
    Site,
    WifiAccessPoint,
)
from alert_server.geo.service import current_index, import_files
from alert_server.referents.chains import chains_for_position, default_force
from alert_server.referents.parser import parse_directory
from alert_server.referents.schemas import Directory
from tests.geo.conftest import import_all
from tests.referents.conftest import NIGHTS_AND_BORDER

NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # Tuesday 22:00 in Paris
MARSEILLE = (43.2965, 5.3698)
AUBAGNE = (43.2927, 5.5708)
CHARLEVAL = (43.735, 5.2368)  # 13, 1.4 km from Vaucluse
PUGET = (43.750, 5.2368)  # 84, 283 m from 13
SCAN = RadioScan(wifi=(WifiAccessPoint("a4:2b:b0:11:22:33", -60),), measured_at=NOW)


class StubLocator:
    """A provider that answers a fixed position (the HTTP one is tested in test_providers)."""

    name = "stub"

    def __init__(self, answer: ProviderFix | None) -> None:
        self.answer = answer
        self.calls = 0

    def locate(self, scan: RadioScan, *, timeout_s: float) -> ProviderFix | None:
        self.calls += 1
        return self.answer


class FailingLocator:
    name = "failing"

    def locate(self, scan: RadioScan, *, timeout_s: float) -> ProviderFix | None:
        raise RuntimeError("provider bug")


def fix(
    lat_lon: tuple[float, float], age_s: float, acc_m: float | None = 10, src: str = "gps"
) -> Fix:
    return Fix(lat_lon[0], lat_lon[1], acc_m, NOW - timedelta(seconds=age_s), src)


@pytest.fixture(scope="module")
def directory() -> Directory:
    return parse_directory(NIGHTS_AND_BORDER, "annuaire.yaml")


def resolve(inputs: PositionInputs, index: GeoIndex, **kwargs: object) -> ResolvedPosition:
    return resolve_position(inputs, now=NOW, index=index, **kwargs)  # type: ignore[arg-type]


def test_fresh_fix_wins(france: GeoIndex) -> None:
    stub = StubLocator(ProviderFix(*AUBAGNE, 30, "stub"))
    r = resolve(
        PositionInputs(
            fix=fix(MARSEILLE, 20),
            radio=SCAN,
            site=Site(*AUBAGNE, "Pharmacie"),
            last_known=(fix(AUBAGNE, 60),),
        ),
        france,
        providers=[stub],
    )
    assert (r.source, r.commune_code, r.commune_nom, r.departement) == (
        "gps",
        "13055",
        "Marseille",
        "13",
    )
    assert r.age_s == 20 and r.acc_m == 10 and r.flags == frozenset()
    assert stub.calls == 0  # no provider call when the alert has a fresh fix
    assert not needs_locate(r)


def test_stale_fix_gives_way_to_provider(france: GeoIndex) -> None:
    stub = StubLocator(ProviderFix(*AUBAGNE, 30, "stub"))
    r = resolve(
        PositionInputs(fix=fix(MARSEILLE, FRESH_FIX_S + 1), radio=SCAN),
        france,
        providers=[FailingLocator(), StubLocator(None), stub],
    )
    assert (r.source, r.provider, r.commune_code) == ("provider", "stub", "13005")
    assert r.measured_at == NOW and r.flags == frozenset()


def test_fallback_order_when_sources_are_missing(france: GeoIndex) -> None:
    site = Site(*AUBAGNE, "Pharmacie du Cours")
    recent = fix(MARSEILLE, 120)
    old = fix(MARSEILLE, 3600)
    nothing = StubLocator(None)

    # Provider has nothing: a heartbeat from 2 minutes ago is still fresh and beats the site.
    r = resolve(
        PositionInputs(radio=SCAN, site=site, last_known=(old, recent)), france, providers=[nothing]
    )
    assert (r.source, r.age_s, r.flags) == ("last_known", 120, frozenset())
    assert nothing.calls == 1

    # Only an old heartbeat: the registered site comes first.
    r = resolve(PositionInputs(site=site, last_known=(old,)), france)
    assert (r.source, r.site_label, r.commune_code, r.age_s) == (
        "site",
        "Pharmacie du Cours",
        "13005",
        None,
    )
    assert needs_locate(r)  # a site is an assumption: ask the device

    # Nothing else: the old heartbeat, flagged stale, with its age.
    r = resolve(PositionInputs(last_known=(old,)), france)
    assert (r.source, r.age_s, r.departement) == ("last_known", 3600, "13")
    assert r.flags == frozenset({"stale_position"})
    assert needs_locate(r)

    # A stale fix in the alert itself is a last known position too.
    r = resolve(PositionInputs(fix=fix(AUBAGNE, 900), last_known=(old,)), france)
    assert (r.source, r.age_s, r.commune_code) == ("last_known", 900, "13005")

    # Nothing at all: no position, national fallback only.
    r = resolve(PositionInputs(), france)
    assert r.flags == frozenset({"no_position"}) and r.departements == () and r.source is None
    assert needs_locate(r)


def test_unusable_fixes_are_skipped(france: GeoIndex) -> None:
    null_island = Fix(0.0, 0.0, 5, NOW, "gps")
    r = resolve(PositionInputs(fix=null_island, last_known=(fix(MARSEILLE, 30),)), france)
    assert r.source == "last_known" and r.departement == "13"
    # A fixed installation's position never goes stale.
    r = resolve(PositionInputs(fix=fix(MARSEILLE, 86_400 * 30, src="fixed")), france)
    assert r.source == "fixed" and r.flags == frozenset()
    # A fix without a time came with the alert: as fresh as the alert.
    r = resolve(PositionInputs(fix=Fix(*MARSEILLE, 12, None, "wifi")), france)
    assert r.source == "wifi" and r.age_s is None and r.flags == frozenset()


def test_forces_from_the_zone_table(france: GeoIndex, directory: Directory) -> None:
    def force_at(lat: float, lon: float) -> tuple[str | None, str | None]:
        r = resolve(
            PositionInputs(fix=Fix(lat, lon, 10, NOW, "gps")),
            france,
            default_force=lambda dep: default_force(directory, dep),
        )
        return r.commune_code, r.force

    assert force_at(48.0686, -0.7734) == ("53130", "PN")  # Laval: police
    assert force_at(48.1372, -0.5506) == ("53161", "GN")  # Montsûrs: gendarmerie
    assert force_at(48.8566, 2.3522) == ("75056", "PN")
    # Not in the sample table: the directory's default (PN first when both are listed).
    assert force_at(*MARSEILLE) == ("13055", "PN")
    r = resolve(PositionInputs(fix=fix(MARSEILLE, 0)), france)
    assert r.force is None  # no table entry and no default given


def test_accuracy_circle_across_13_84_notifies_both_chains(
    france: GeoIndex, directory: Directory
) -> None:
    r = resolve(
        PositionInputs(fix=Fix(*CHARLEVAL, 2_000, NOW, "cell")),
        france,
        default_force=lambda dep: default_force(directory, dep),
    )
    assert r.departement == "13" and r.departements == ("13", "84")
    assert "ambiguous_border" in r.flags
    assert r.forces == (("13", "PN"), ("84", "PN"))
    chains = chains_for_position(directory, r, NOW)
    assert [(c.departement, c.force) for c in chains] == [("13", "PN"), ("84", "PN")]
    assert [c.phone for c in chains[0].contacts] == ["+33491000113", "+33100000000"]
    assert [c.phone for c in chains[1].contacts] == ["+33490000184", "+33100000000"]
    # The same place with a precise fix: one département, one chain.
    precise = resolve(PositionInputs(fix=Fix(*CHARLEVAL, 20, NOW, "gps")), france)
    assert precise.departements == ("13",) and "ambiguous_border" not in precise.flags


def test_no_accuracy_near_border_is_ambiguous(france: GeoIndex) -> None:
    r = resolve(PositionInputs(fix=Fix(*PUGET, None, NOW, "manual")), france)
    assert (r.departement, r.departements, r.commune_code) == ("84", ("84", "13"), "84093")
    assert r.flags == frozenset({"ambiguous_border"})


@pytest.mark.parametrize(
    "lat_lon",
    [(42.5, 5.0), (46.2044, 6.1432), (50.8503, 4.3517)],
    ids=["mer", "geneve", "bruxelles"],
)
def test_outside_france_goes_to_national_fallback_only(
    france: GeoIndex, directory: Directory, lat_lon: tuple[float, float]
) -> None:
    r = resolve(PositionInputs(fix=fix(lat_lon, 10)), france)
    assert r.flags == frozenset({"outside_france"})
    assert r.departement is None and r.departements == () and r.commune_code is None
    chains = chains_for_position(directory, r, NOW)
    assert len(chains) == 1 and chains[0].departement is None
    assert [c.phone for c in chains[0].contacts] == ["+33100000000"]


def test_drom_positions(france: GeoIndex) -> None:
    for lat, lon, dep in [
        (16.2411, -61.5331, "971"),
        (14.6161, -61.0588, "972"),
        (4.9224, -52.3135, "973"),
        (-20.8789, 55.4481, "974"),
        (-12.7806, 45.2278, "976"),
    ]:
        r = resolve(PositionInputs(fix=Fix(lat, lon, 15, NOW, "gps")), france)
        assert (r.departement, r.departements, r.flags) == (dep, (dep,), frozenset())


def test_moving_alert_only_adds_departements(france: GeoIndex) -> None:
    first = resolve(PositionInputs(fix=Fix(*CHARLEVAL, 20, NOW, "gps")), france)
    assert first.departements == ("13",)
    moved = resolve(PositionInputs(fix=Fix(*PUGET, 20, NOW, "gps")), france)
    assert moved.departements == ("84",)
    assert departements_to_add(first.departements, moved) == ("84",)
    # Coming back changes nothing: 84 is never removed, 13 is already there.
    back = resolve(PositionInputs(fix=Fix(*CHARLEVAL, 20, NOW, "gps")), france)
    assert departements_to_add(("13", "84"), back) == ()
    assert departements_to_add((), resolve(PositionInputs(), france)) == ()


def test_without_boundary_data_routes_to_fallback() -> None:
    r = resolve_position(PositionInputs(fix=fix(MARSEILLE, 0)), now=NOW, index=None)
    assert r.source == "gps" and r.departements == () and r.departement is None


def test_current_index_follows_new_imports(
    engine: Engine, small_geo: dict[str, Path], tmp_path: Path
) -> None:
    assert current_index(engine) is None
    import_all(engine, small_geo)
    first = current_index(engine)
    assert first is not None and first.departement_at(43.65, 5.05) == "84"
    assert current_index(engine) is first  # cached while nothing changes
    swapped = tmp_path / "swap.geojson"
    swapped.write_text(small_geo["departements"].read_text().replace('"84"', '"04"'))
    import_files(engine, departements=swapped)
    second = current_index(engine)
    assert second is not first and second is not None
    assert second.departement_at(43.65, 5.05) == "04"
