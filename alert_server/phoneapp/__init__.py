"""The worker's phone as a panic button: the installable web app served at ``/app/``.

The app speaks protocol.md over MQTT over WebSocket straight to the broker (like any device:
its own account, the same ACL), so an alert never depends on this HTTP server being up. The
HTTP side only serves the static app and redeems one-time enrolment codes
(``alert_server.devices.enrol``), which give the phone its MQTT credentials.
"""
