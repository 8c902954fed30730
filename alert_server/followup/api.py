"""Follow-up over HTTP: the ONVS pre-fill of an alert and the monthly statistics, for the
caller's départements only (the same visibility rule as the alerts)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.responses import Response

import alert_server.audit as audit_trail
import alert_server.reports as reports
from alert_server.alerts.api import NOT_FOUND, UNAUTHORIZED, get_visible
from alert_server.db import read_scope
from alert_server.followup import stats
from alert_server.users.api import api_principal, engine_of
from alert_server.users.schemas import Principal

router = APIRouter(prefix="/api", tags=["suivi"])
PrincipalDep = Annotated[Principal, Depends(api_principal)]
AlertIdPath = Annotated[str, Path(min_length=1, max_length=64)]


def visible_stats(principal: Principal, rows: list[stats.MonthStats]) -> list[stats.MonthStats]:
    """A dispatcher of 13 sees 13's figures; unknown-département figures only unrestricted."""
    return [
        r
        for r in rows
        if principal.sees_departement(
            None if r.departement == stats.UNKNOWN_DEPT else r.departement
        )
    ]


def onvs_for(request: Request, principal: Principal, alert_id: str) -> dict[str, Any]:
    with read_scope(engine_of(request)) as session:
        if get_visible(session, principal=principal, alert_id=alert_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Alerte introuvable")
        data = reports.onvs_prefill(session, alert_id=alert_id)
    assert data is not None
    # The pre-fill can hold the worker's name and the patient's address: an audited read.
    audit_trail.record_read(
        engine_of(request), request, principal, audit_trail.ONVS_EXPORT, target=alert_id
    )
    return data


def monthly_for(request: Request, principal: Principal) -> list[stats.MonthStats]:
    with read_scope(engine_of(request)) as session:
        rows = visible_stats(principal, reports.monthly_stats(session))
    audit_trail.record_read(
        engine_of(request), request, principal, audit_trail.STATS_EXPORT, rows=len(rows)
    )
    return rows


def _csv(text: str, filename: str) -> Response:
    return Response(
        # A BOM so that spreadsheet programs read the accents as UTF-8.
        content="\ufeff" + text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/alerts/{alert_id}/onvs",
    summary="Pré-remplissage ONVS de l'alerte (JSON)",
    responses={**UNAUTHORIZED, **NOT_FOUND},
)
def api_onvs(request: Request, principal: PrincipalDep, alert_id: AlertIdPath) -> dict[str, Any]:
    return onvs_for(request, principal, alert_id)


@router.get(
    "/alerts/{alert_id}/onvs.csv",
    summary="Pré-remplissage ONVS de l'alerte (CSV)",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **UNAUTHORIZED,
        **NOT_FOUND,
    },
)
def api_onvs_csv(request: Request, principal: PrincipalDep, alert_id: AlertIdPath) -> Response:
    from alert_server.followup import onvs

    return _csv(onvs.to_csv([onvs_for(request, principal, alert_id)]), f"onvs-{alert_id}.csv")


@router.get(
    "/stats/monthly",
    summary="Statistiques mensuelles par département",
    responses=UNAUTHORIZED,
)
def api_monthly(request: Request, principal: PrincipalDep) -> list[dict[str, Any]]:
    return [
        {**asdict(s), "by_kind": dict(s.by_kind), "by_outcome": dict(s.by_outcome)}
        for s in monthly_for(request, principal)
    ]


@router.get(
    "/stats/monthly.csv",
    summary="Statistiques mensuelles par département (CSV)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **UNAUTHORIZED},
)
def api_monthly_csv(request: Request, principal: PrincipalDep) -> Response:
    return _csv(stats.to_csv(monthly_for(request, principal)), "vigie-statistiques.csv")
