"""Outbound channels: Twilio (the only twilio user) and a simulated telephony for the demo."""
