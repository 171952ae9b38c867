"""Local stand-ins for AWS IoT Core, used by tests/device and `make demo` only (never deployed): a real
mosquitto over mutual TLS with an ACL written from the device policy (broker.py, acl.py), the IoT Jobs device
MQTT API (jobs_service.py), and the bridge that hands broker messages to the real Lambda handlers
(bridge.py)."""
