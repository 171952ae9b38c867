"""Fleetwarden reference device agent: what a firmware team reads and ports.

It talks to AWS IoT Core (or the local mosquitto of the tests and the demo) over MQTT with mutual TLS, as its
thing name, on its own topics only. Every topic comes from `fleetwarden_contracts.topics` and every command is
checked by `fleetwarden_contracts.commands`: the same modules the backend uses (`lambdas/shared`, installed
under that name by pyproject's package mapping, not copied). It never listens on a port.
"""
