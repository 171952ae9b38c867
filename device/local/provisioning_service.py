"""Fleet provisioning's device MQTT API, played over the local broker with the local CA:
CreateCertificateFromCsr, then RegisterThing, whose decision is the pre-provisioning hook's (the demo passes
the real hook). Payloads as "Device provisioning MQTT API"
(https://docs.aws.amazon.com/iot/latest/developerguide/fleet-provision-api.html) documents them; the hook
event as the pre-provisioning hook receives it (payload version 2020-04-01)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fleetwarden_contracts import topics

from .jobs_service import subscribe

CLAIM_CERTIFICATE_ID = "c1a1" * 16


class ProvisioningService:
    def __init__(
        self,
        client,
        pki,
        template: str,
        *,
        hook: Callable[[dict], dict],
        register: Callable[[str, str, x509.Certificate], None],
    ):
        self.client, self.pki, self.template = client, pki, template
        self.hook = hook  # the pre-provisioning hook: event -> {"allowProvisioning": bool, ...}
        self.register = register  # (thing, certificate id, certificate): CreateThing, AttachThingPrincipal...
        self.pending: dict[str, tuple[str, x509.Certificate]] = {}  # ownership token -> (id, certificate)
        self.create, _, self.provision = (
            f"{prefix}/json" for prefix in topics.provisioning_prefixes(template)
        )
        for topic in (self.create, self.provision):
            client.message_callback_add(topic, self._on_message)
            subscribe(client, topic)

    def _answer(self, topic: str, body: dict) -> None:
        self.client.publish(topic, json.dumps(body), qos=1)

    def _on_message(self, client, userdata, message) -> None:
        try:
            request = json.loads(message.payload)
        except ValueError:
            request = {}
        if message.topic == self.create:
            try:
                certificate = self.pki.sign_csr(request["certificateSigningRequest"].encode("ascii"), days=7)
            except Exception as error:  # what CreateCertificateFromCsr does with a bad CSR
                self._answer(
                    f"{self.create}/rejected",
                    {"statusCode": 400, "errorCode": "InvalidCsr", "errorMessage": str(error)[:200]},
                )
                return
            certificate_id = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
            token = secrets.token_urlsafe(32)
            self.pending[token] = (certificate_id, certificate)
            self._answer(
                f"{self.create}/accepted",
                {
                    "certificateId": certificate_id,
                    "certificateOwnershipToken": token,
                    "certificatePem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                },
            )
            return
        owned = self.pending.pop(request.get("certificateOwnershipToken", ""), None)
        parameters = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
        if owned is None:
            self._answer(
                f"{self.provision}/rejected",
                {
                    "statusCode": 400,
                    "errorCode": "InvalidRequest",
                    "errorMessage": "unknown certificate ownership token",
                },
            )
            return
        certificate_id, certificate = owned
        decision = self.hook(
            {
                "claimCertificateId": CLAIM_CERTIFICATE_ID,
                "certificateId": certificate_id,
                "certificatePem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                "templateArn": f"arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/{self.template}",
                # MQTT 3.1.1 does not tell a subscriber who published: the client id is claim-<serial>
                "clientId": f"claim-{parameters.get('SerialNumber', '')}",
                "parameters": parameters,
            }
        )
        if decision.get("allowProvisioning") is not True:
            self._answer(
                f"{self.provision}/rejected",
                {
                    "statusCode": 403,
                    "errorCode": "AccessDenied",
                    "errorMessage": "the pre-provisioning hook refused",
                },
            )
            return
        thing = str(parameters.get("SerialNumber"))
        self.register(thing, certificate_id, certificate)
        self._answer(f"{self.provision}/accepted", {"thingName": thing, "deviceConfiguration": {}})
