"""The device side: `fleetwarden_device` (the reference agent, its own installable package with the
`fleetwarden-device` entry point) and `local` (the local broker, Jobs stand-in and bridge used by the tests
and `make demo`; scaffolding, never deployed)."""
