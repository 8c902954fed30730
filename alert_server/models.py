"""Imports every table so that ``SQLModel.metadata`` is complete (migrations, checks)."""

import alert_server.alerts.models
import alert_server.devices.models  # noqa: F401
