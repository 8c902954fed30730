"""Outbound escalation: SMS and voice to the referent chain until someone acknowledges.

Never imports ``alert_server``; runs and is tested alone (``dispatch.db`` creates and migrates
its database). The seam is ``Dispatcher`` (``dispatch.api``); the Twilio callbacks are
``dispatch.webhooks.make_router``; the channels are in ``dispatch.channels``. The decisions
behind it are in ``docs/decisions/``.
"""

from dispatch.api import Dispatcher
from dispatch.config import DispatchConfig, TickReport
from dispatch.hooks import DispatchHooks, NoopHooks

__all__ = ["DispatchConfig", "DispatchHooks", "Dispatcher", "NoopHooks", "TickReport"]
