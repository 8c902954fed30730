"""MQTT brokers for development, tests and ``vigie demo``: Mosquitto's files (``files``), a
local Mosquitto on free ports (``mosquitto``) and an embedded pure-Python broker (``embedded``).

Shared by the server's CLI, the simulator and the tests, so none of them reaches into another.
"""
