"""``vigie purge [--dry-run]``: the retention purge (CNIL), by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alert_server.audit import record_cli
from alert_server.db import make_engine, migrate, write_scope
from alert_server.retention import PurgeReport, RetentionPolicy, purge
from alert_server.settings import describe_setting_errors, load_settings
from vigie.timeutil import utcnow

app = typer.Typer(
    help="Purge des données personnelles arrivées au terme de leur durée de conservation.",
    add_completion=False,
)


def report_lines(report: PurgeReport, policy: RetentionPolicy) -> list[str]:
    verb = "seraient" if report.dry_run else "ont été"
    return [
        f"Conservation : positions {policy.position_days} jours, "
        f"alertes {policy.alert_months} mois, journal d'audit {policy.audit_months} mois.",
        f"  device         positions de boîtiers effacées        : {report.device_positions}",
        f"  visit_session  visites terminées effacées            : {report.ended_sessions}",
        f"  alert          alertes oubliées closes « expirées »  : {report.alerts_expired}",
        f"  alert          alertes pseudonymisées                : {report.alerts_pseudonymised}",
        f"  worker_message SMS aux travailleurs effacés          : {report.worker_messages}",
        f"  worker         travailleurs révoqués effacés         : {report.workers_erased}",
        f"  dispatch_inbound SMS reçus des référents effacés     : {report.inbound_sms}",
        f"  audit          lignes du journal effacées            : {report.audit_rows}",
        f"  web_session    sessions de console terminées effacées : {report.web_sessions}",
        f"Ces données {verb} traitées."
        + (" Simulation : rien n'a été modifié." if report.dry_run else ""),
    ]


@app.callback(invoke_without_command=True)
def main(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Affiche ce qui serait effacé, sans rien modifier."),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Fichier TOML de réglages (sinon VIGIE_*).")
    ] = None,
) -> None:
    """Efface les positions hors alerte et hors visite, pseudonymise les alertes closes
    anciennes (durées : VIGIE_RETENTION_POSITION_DAYS, VIGIE_RETENTION_ALERT_MONTHS)."""
    try:
        settings = load_settings(config)
    except Exception as exc:
        typer.echo(f"vigie: erreur: réglages: {describe_setting_errors(exc)}", err=True)
        raise typer.Exit(2) from exc
    policy = RetentionPolicy(
        position_days=settings.retention_position_days,
        alert_months=settings.retention_alert_months,
        audit_months=settings.retention_audit_months,
    )
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        report = purge(engine, now=utcnow(), policy=policy, dry_run=dry_run)
        with write_scope(engine) as session:
            record_cli(
                session, "purge.dry_run" if dry_run else "purge", target=None,
                command="vigie purge", **report.as_dict(),
            )  # fmt: skip
    finally:
        engine.dispose()
    for line in report_lines(report, policy):
        typer.echo(line)
