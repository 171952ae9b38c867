"""The TLS client context: mutual TLS to one pinned CA, TLS 1.2 at least and 1.3 preferred.

* Trust: only `ca_file` (no system trust store), so a certificate from any other CA, public or not, is
  refused.
* The server's host name is checked against its certificate (`check_hostname`), and sent as SNI: AWS IoT Core
  refuses connections without SNI and picks the domain configuration by it ("Device communication protocols",
  https://docs.aws.amazon.com/iot/latest/developerguide/protocols.html).
* Versions: AWS IoT Core "uses TLS version 1.2 and TLS version 1.3" (same page); the minimum is configurable
  up, never down. OpenSSL offers the highest both sides have, so 1.3 is used whenever the server has it.
* Port 443: clients with X.509 certificates "must implement the ALPN TLS extension and use the ALPN protocol
  name" `x-amzn-mqtt-ca` (same page, "Protocols, port mappings, and authentication").
"""

from __future__ import annotations

import ssl
from pathlib import Path

ALPN_MQTT_ON_443 = "x-amzn-mqtt-ca"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_context(
    *, ca_file: Path, cert_file: Path, key_file: Path, min_version: str = "1.2", port: int = 8883
) -> ssl.SSLContext:
    if min_version not in _VERSIONS:
        raise ValueError(f"minimum TLS version must be one of {sorted(_VERSIONS)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.minimum_version = _VERSIONS[min_version]
    context.load_verify_locations(cafile=str(ca_file))  # pinned: load_default_certs() is never called
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if port == 443:
        context.set_alpn_protocols([ALPN_MQTT_ON_443])
    return context
