"""The console's journal page: reads of personal data in the console are recorded, the page
filters by action, and the CSV export (itself recorded) follows the filter."""

from __future__ import annotations

from tests.api.conftest import ApiStack
from tests.dashboard.conftest import http_login


def test_console_reads_and_audit_page_filter_and_csv(console_app: ApiStack) -> None:
    password = console_app.add_user("chef", role="admin")
    alert_id = console_app.add_alert("13")
    with http_login(console_app.url, "chef", password) as c:
        assert c.get("/dashboard/").status_code == 200
        assert c.get(f"/dashboard/alerts/{alert_id}").status_code == 200
        assert c.get(f"/dashboard/alerts/{alert_id}/onvs.csv").status_code == 200
        assert c.get("/dashboard/stats.csv").status_code == 200
        page = c.get("/dashboard/audit", params={"action": "onvs.export"})
        assert page.status_code == 200 and "Exporter en CSV" in page.text
        assert "onvs.export" in page.text and "alert.list" not in page.text
        csv = c.get("/dashboard/audit.csv", params={"action": "alert.*"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        lines = csv.text.lstrip("\ufeff").splitlines()
        assert lines[0].startswith("date (UTC);compte;action")
        assert {line.split(";")[2] for line in lines[1:]} == {"alert.list", "alert.view"}
    actions = [r.action for r in console_app.audit()]
    assert {"alert.list", "alert.view", "onvs.export", "stats.export", "audit.export"} <= set(
        actions
    )
