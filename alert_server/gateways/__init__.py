"""Gateways for devices that already exist and do not speak protocol.md.

Each one (the OsmAnd HTTP endpoint, the MQTT button bridge) turns what its device sends into a
protocol.md alert and hands it to the same ingest writer as an MQTT alert: the same storage,
the same identity and flood rules, the same pipeline afterwards.
"""
