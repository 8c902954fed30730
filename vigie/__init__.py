"""Vigie's shared vocabulary and mechanisms, imported by the server, dispatch and the simulator."""
