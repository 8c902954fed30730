"""Imports every table so that ``SQLModel.metadata`` is complete (migrations, checks).

Above the stages: it imports every one of them, so nothing a stage imports may import it.
"""

from sqlalchemy import MetaData
from sqlmodel import SQLModel

import alert_server.alerts.models
import alert_server.devices.models
import alert_server.followup.models
import alert_server.gateways.models
import alert_server.geo.models
import alert_server.referents.models
import alert_server.sessions.models
import alert_server.users.models  # noqa: F401
import dispatch.models  # noqa: F401


def metadata() -> MetaData:
    """All tables, with every model module imported (for migration checks)."""
    return SQLModel.metadata
