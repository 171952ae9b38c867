"""fleetctl: the Fleetwarden operator CLI (device PKI and provisioning tokens).

Logic lives in plain modules so it can be tested without the command line:
`serials` (thing-name rules), `files` (PEM loading and safe writes), `pki` (certificates),
`tokens` (provisioning-token API client). `cli` only parses arguments and maps errors to exit codes.
"""
