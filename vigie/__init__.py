"""What crosses the boundaries of Vigie, shared by the server, dispatch and the simulator.

The wire protocol (topic names, payload models, time format), the vocabulary (alert states,
kinds, channels, ... as enums) and the test brokers live here so that the simulator depends on
the protocol only, never on the alert server's internals. Nothing here imports the rest of the
project (``tests/test_architecture.py`` checks it).
"""
