"""Fakes of the outside systems (Twilio)."""
