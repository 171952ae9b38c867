"""Field association: a device without a factory certificate gets its own through fleet provisioning.

It connects with the shared claim certificate under client id `claim-<serial>` (the claim policy allows only
`claim-*`), then uses the Device provisioning MQTT API ("Device provisioning MQTT API",
https://docs.aws.amazon.com/iot/latest/developerguide/fleet-provision-api.html), subscribing to the answers
first ("If you don't subscribe to the response topics before you publish a request, you might not receive the
results"):
1. `$aws/certificates/create-from-csr/json` `{"certificateSigningRequest": <PEM>}` (its own key stays on the
   device) -> `.../accepted` `{"certificateId", "certificatePem", "certificateOwnershipToken"}`;
2. `$aws/provisioning-templates/<template>/provision/json` `{"certificateOwnershipToken", "parameters":
   {"SerialNumber", "ProvisioningToken"}}` -> `.../accepted` `{"thingName", "deviceConfiguration"}`, or
   `.../rejected` `{"statusCode", "errorCode", "errorMessage"}` (the pre-provisioning hook said no: a used,
   expired or foreign token).
The certificate is written only once RegisterThing accepted it, and only if it carries the device's key.
Topics from `fleetwarden_contracts.topics.provisioning_prefixes`.
"""

from __future__ import annotations

import json
import queue
import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fleetwarden_contracts import topics

from . import identity, tls
from .config import Config

CLAIM_CLIENT_PREFIX = "claim-"  # the claim policy's Connect resource (lambdas/identity/tokens.py)
TIMEOUT_SECONDS = 30


class ProvisioningRefused(Exception):
    pass


def provision(
    config: Config,
    *,
    claim_cert: Path,
    claim_key: Path,
    template: str,
    token: str,
    timeout: float = TIMEOUT_SECONDS,
) -> str:
    """The thing name RegisterThing gave; the device's certificate is then at `config.cert_file`."""
    key = (
        identity.load_key(config.key_file) if config.key_file.exists() else identity.new_key(config.key_file)
    )
    csr = identity.csr_pem(key, config.thing).decode("ascii")
    create, _, register = topics.provisioning_prefixes(template)
    create, register = f"{create}/json", f"{register}/json"
    answers: queue.Queue = queue.Queue()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=CLAIM_CLIENT_PREFIX + config.thing, protocol=mqtt.MQTTv311
    )
    client.tls_set_context(
        tls.client_context(
            ca_file=config.ca_file,
            cert_file=claim_cert,
            key_file=claim_key,
            min_version=config.tls_min_version,
            port=config.port,
        )
    )
    client.on_connect = lambda c, u, f, rc, p: answers.put(("connack", rc))
    client.on_message = lambda c, u, m: answers.put((m.topic, m.payload))

    def next_answer(*expected: str):
        while True:
            try:
                topic, payload = answers.get(timeout=timeout)
            except queue.Empty:
                raise ProvisioningRefused(f"no answer on {expected} within {timeout} s") from None
            if topic in expected:
                return topic, payload

    try:
        client.connect(config.endpoint, config.port, keepalive=config.keepalive)
    except (OSError, ssl.SSLError) as error:
        raise ProvisioningRefused(f"claim connection refused: {error}") from None
    client.loop_start()
    try:
        _, reason = next_answer("connack")
        if reason.is_failure:
            raise ProvisioningRefused(f"claim connection refused: {reason}")
        client.subscribe(
            [
                (f"{create}/accepted", 1),
                (f"{create}/rejected", 1),
                (f"{register}/accepted", 1),
                (f"{register}/rejected", 1),
            ]
        )
        client.publish(create, json.dumps({"certificateSigningRequest": csr}), qos=1)
        topic, payload = next_answer(f"{create}/accepted", f"{create}/rejected")
        answer = json.loads(payload)
        if topic.endswith("/rejected"):
            raise ProvisioningRefused(f"CreateCertificateFromCsr refused: {answer}")
        certificate_pem = answer["certificatePem"]
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(
            serialization.Encoding.DER, spki
        ) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
            raise ProvisioningRefused("the certificate offered is not for this device's key")
        client.publish(
            register,
            json.dumps(
                {
                    "certificateOwnershipToken": answer["certificateOwnershipToken"],
                    "parameters": {"SerialNumber": config.thing, "ProvisioningToken": token},
                }
            ),
            qos=1,
        )
        topic, payload = next_answer(f"{register}/accepted", f"{register}/rejected")
        result = json.loads(payload)
        if topic.endswith("/rejected"):
            raise ProvisioningRefused(
                f"RegisterThing refused: {result.get('errorCode')} {result.get('errorMessage')}"
            )
        identity.write_public(config.cert_file, certificate_pem.encode("ascii"))
        return result.get("thingName", config.thing)
    finally:
        client.disconnect()
        client.loop_stop()
