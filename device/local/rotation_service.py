"""The backend's certificate rotation, played over the local broker with the local CA (the Commands stack does
it with CreateCertificateFromCsr): answers `cmd/<thing>/certs/request` with `response/accepted` (or
`rejected`), and a confirmation from the device with `response/confirmed`. Topics and payloads from
`fleetwarden_contracts.topics` and the Commands stack's contract (README, Commands)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fleetwarden_contracts import topics

from .jobs_service import subscribe


class RotationService:
    def __init__(self, client, pki, on_issued: Callable[[str, str, x509.Certificate], None] | None = None):
        self.client = client
        self.pki = pki
        self.on_issued = (
            on_issued  # (thing, certificate id, certificate): the demo registers it in the registry
        )
        self.requests: list[tuple[str, dict]] = []
        self.confirmations: list[tuple[str, dict]] = []
        self.changed = threading.Event()
        for action in ("request", "confirm"):
            topic = f"{topics.cert_rotation_prefix('+')}/{action}"
            client.message_callback_add(topic, self._on_message)
            subscribe(client, topic)

    def _answer(self, thing: str, outcome: str, body: dict) -> None:
        self.client.publish(
            f"{topics.cert_rotation_response_prefix(thing)}/{outcome}", json.dumps(body), qos=1
        )

    def _on_message(self, client, userdata, message) -> None:
        _, thing, _, action = message.topic.split("/")
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if action == "request":
            self.requests.append((thing, body))
            try:
                certificate = self.pki.sign_csr(body["csr"].encode("ascii"), days=7)
            except Exception as error:  # a bad CSR is refused, as the rotation function does
                self._answer(
                    thing,
                    "rejected",
                    {"request_id": body.get("request_id"), "reason": "bad-csr", "detail": str(error)[:200]},
                )
                return
            der = certificate.public_bytes(serialization.Encoding.DER)
            certificate_id = hashlib.sha256(der).hexdigest()
            if self.on_issued:
                self.on_issued(thing, certificate_id, certificate)
            self._answer(
                thing,
                "accepted",
                {
                    "request_id": body.get("request_id"),
                    "certificate_id": certificate_id,
                    "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                },
            )
        else:
            self.confirmations.append((thing, body))
            self._answer(thing, "confirmed", {"certificate_id": body.get("certificate_id"), "retired": []})
        self.changed.set()
