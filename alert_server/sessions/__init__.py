"""Timed visits (protocol.md "Session"): start, extend, check-in, end; warning then alert.

The timers are rows (``visit_session.due_at``) advanced by ``engine.SessionEngine.tick(now)``,
claimed atomically so that each fires once across servers and survives restarts.
"""
