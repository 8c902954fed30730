"""Imports every table so that ``SQLModel.metadata`` is complete (migrations, checks)."""

import alert_server.alerts.models
import alert_server.devices.models
import alert_server.followup.models
import alert_server.gateways.models
import alert_server.geo.models
import alert_server.referents.models
import alert_server.sessions.models
import alert_server.users.models  # noqa: F401
import dispatch.models  # noqa: F401
