"""dispatch runs on its own: its own engine and migrations, no alert server imported.

The whole path (create the engine, migrate, plan an escalation, send through the simulated
channel, acknowledge by the SMS reply) runs in a fresh interpreter, which then lists every
module it imported: a single ``alert_server`` (or ``device_sim``) module fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, re, sys
from datetime import UTC, datetime

from dispatch import Dispatcher, DispatchConfig
from dispatch.channels.simulated import SimulatedNotifier
from dispatch.db import make_engine, migrate
from dispatch.policy import DEFAULT_POLICY
from dispatch.schemas import AlertBrief, Chain, Contact

engine = make_engine(sys.argv[1])
migrate(engine)
migrate(engine)  # idempotent, like every server start
sim = SimulatedNotifier(report_delivery=False)
d = Dispatcher(engine=engine, notifier=sim, config=DispatchConfig(public_url="https://x.example"))
now = datetime.now(UTC)
brief = AlertBrief(alert_id="alone-1", device_id="dev-1", kind="sos", created_at=now)
chain = Chain("13", "PN", (Contact("Ref A", "+33600000001"), Contact("Ref B", "+33600000002")))
with d.session() as s:
    created = d.start(s, brief=brief, chains=[chain], policy=DEFAULT_POLICY, now=now)
    s.commit()
report = d.run_due(alert_id="alone-1", now=now)
sms = [m for m in sim.sent if m.channel == "sms"]
code = re.search(r"OK (\d{3,6})", sms[0].body).group(1)
out, _reply = d.sender.handle_inbound_sms(
    from_phone=sms[0].to, to_phone=None, body=f"OK {code}", sid="SMalone", now=now
)
with d.session() as s:
    view = d.view(s, alert_id="alone-1")
d.shutdown()
sim.close()
leaked = sorted(
    m for m in sys.modules if m.split(".")[0] in ("alert_server", "device_sim")
)
print(json.dumps({
    "created": created, "sent": report.sent, "to": sms[0].to, "outcome": out.outcome,
    "status": view.status, "acked_by": view.acked_by_name, "leaked": leaked,
}))
"""


def test_dispatch_runs_alone_without_the_alert_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dispatch.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []
    assert result["created"] is True and result["sent"] == 1
    assert result["to"] == "+33600000001"
    assert result["outcome"] == "acknowledged"
    assert result["status"] == "acknowledged" and result["acked_by"] == "Ref A"
