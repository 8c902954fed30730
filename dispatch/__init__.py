"""Outbound escalation: SMS and voice to the referent chain until someone acknowledges.

Never imports ``alert_server``. Entry points: ``dispatch.engine.Dispatcher`` (start,
acknowledge, stand_down, mark_duress, close, timeline, tick, run_due),
``dispatch.clock.Clock`` (drives ``tick``), ``dispatch.webhooks.make_router`` (Twilio
callbacks) and the channels in ``dispatch.channels``.
"""
