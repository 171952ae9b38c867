"""Certificate rotation, device side: the device is never without a working identity.

The backend's contract (Commands stack; topics from `fleetwarden_contracts.topics`):
1. new key made on the device (`<key_file>.next`, 0600), CSR with CN = thing, published to
   `cmd/<thing>/certs/request` as `{"csr": <PEM>, "request_id": <1-64 [A-Za-z0-9_-]>}` over the OLD
   certificate;
2. `cmd/<thing>/certs/response/accepted` `{"request_id", "certificate_id", "certificate_pem"}` (or `rejected`
   `{"request_id", "reason", "detail"}`): the certificate is checked here (it must carry the new key and CN =
   thing) before it is used; then the files swap: the old key and certificate become `*.previous`, the new
   ones the current; the agent reconnects with them;
3. connected with the NEW certificate, the device publishes `{"certificate_id"}` to
  `cmd/<thing>/certs/confirm`; the backend retires the old certificate only if the confirmation's principal is
  the new one, and answers on `response/confirmed` `{"certificate_id", "retired"}`;
4. only then are `*.previous` deleted. If the new certificate is refused `MAX_REFUSALS` times in a row before
   the confirmation, the files swap back (the old certificate is still ACTIVE: nothing was retired).
State lives in files (`rotation.json` next to the state), so a restart in the middle resumes where it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from fleetwarden_contracts import topics

from . import identity

log = logging.getLogger("fleetwarden_device.rotation")
MAX_REFUSALS = 3
_CERTIFICATE_ID = re.compile(r"^[0-9a-f]{64}$")


class Rotation:
    def __init__(
        self,
        *,
        thing: str,
        key_file: Path,
        cert_file: Path,
        state_dir: Path,
        publish: Callable[[str, dict], object],
    ):
        self.thing = thing
        self.key_file, self.cert_file = key_file, cert_file
        self.next_key = key_file.with_name(key_file.name + ".next")
        self.previous_key = key_file.with_name(key_file.name + ".previous")
        self.previous_cert = cert_file.with_name(cert_file.name + ".previous")
        self.next_cert = cert_file.with_name(cert_file.name + ".next")
        self.state_file = state_dir / "rotation.json"
        self.publish = publish
        self.refusals = 0
        self.reconnect_requested = False
        self.completed: list[str] = []  # certificate ids confirmed (the tests and the demo read it)

    # -- state on disk ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}

    def _save(self, state: dict | None) -> None:
        if state is None:
            self.state_file.unlink(missing_ok=True)
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name("rotation.json.partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, self.state_file)

    def subscriptions(self) -> list[str]:
        return [f"{topics.cert_rotation_response_prefix(self.thing)}/+"]

    # -- 1. request ------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Make the next key (or reuse one from an unanswered request) and send its CSR; the request id."""
        if self.state().get("phase") == "switched":
            raise RuntimeError("a rotation is waiting for its confirmation")
        key = identity.load_key(self.next_key) if self.next_key.exists() else identity.new_key(self.next_key)
        request_id = uuid.uuid4().hex
        self._save({"phase": "requested", "request_id": request_id})
        self.publish(
            topics.cert_rotation_request_topic(self.thing),
            {"csr": identity.csr_pem(key, self.thing).decode("ascii"), "request_id": request_id},
        )
        return request_id

    # -- answers ---------------------------------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        prefix = topics.cert_rotation_response_prefix(self.thing) + "/"
        if not topic.startswith(prefix):
            return
        try:
            answer = json.loads(payload)
        except ValueError:
            log.warning("unreadable rotation answer ignored")
            return
        if not isinstance(answer, dict):
            return
        outcome, state = topic[len(prefix) :], self.state()
        if (
            outcome == "accepted"
            and state.get("phase") == "requested"
            and answer.get("request_id") == state["request_id"]
        ):
            self._accepted(answer, state)
        elif outcome == "rejected" and answer.get("request_id") == state.get("request_id"):
            log.warning("rotation refused: %s %s", answer.get("reason"), answer.get("detail"))
            self.next_key.unlink(missing_ok=True)
            self._save(None)
        elif (
            outcome == "confirmed"
            and state.get("phase") == "switched"
            and answer.get("certificate_id") == state["certificate_id"]
        ):
            self.previous_key.unlink(missing_ok=True)
            self.previous_cert.unlink(missing_ok=True)
            self._save(None)
            self.completed.append(state["certificate_id"])
            log.info("rotation confirmed: the old key is deleted")

    def _accepted(self, answer: dict, state: dict) -> None:
        certificate_id, pem = answer.get("certificate_id"), answer.get("certificate_pem")
        try:
            if not isinstance(certificate_id, str) or not _CERTIFICATE_ID.match(certificate_id):
                raise ValueError("certificate_id is not 64 hex characters")
            certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            mine = (
                identity.load_key(self.next_key).public_key().public_bytes(serialization.Encoding.DER, spki)
            )
            if certificate.public_key().public_bytes(serialization.Encoding.DER, spki) != mine:
                raise ValueError("the certificate is not for the new key")
            names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if [name.value for name in names] != [self.thing]:
                raise ValueError("the certificate's CN is not this thing")
        except (ValueError, AttributeError, TypeError) as error:
            log.warning("rotation answer refused: %s", error)
            return
        identity.write_public(self.next_cert, pem.encode("ascii"))
        self._save(
            {"phase": "switching", "request_id": state["request_id"], "certificate_id": certificate_id}
        )
        self.resume()
        self.reconnect_requested = True
        log.info("rotation accepted: reconnecting with certificate %s...", certificate_id[:12])

    def resume(self) -> None:
        """Finish a swap a restart interrupted (each rename is done once; the state file says where we are):
        current -> previous, next -> current, for the key and the certificate."""
        state = self.state()
        if state.get("phase") != "switching":
            return
        for current, previous, upcoming in (
            (self.key_file, self.previous_key, self.next_key),
            (self.cert_file, self.previous_cert, self.next_cert),
        ):
            if upcoming.exists():
                if current.exists() and not previous.exists():
                    os.replace(current, previous)
                os.replace(upcoming, current)
        self._save({**state, "phase": "switched"})
        self.refusals = 0

    # -- connection outcomes ---------------------------------------------------------------------------------
    def on_connected(self) -> None:
        """Connected: with the new certificate if switched, so confirm it."""
        self.refusals = 0
        state = self.state()
        if state.get("phase") == "switched":
            self.publish(
                topics.cert_rotation_confirm_topic(self.thing), {"certificate_id": state["certificate_id"]}
            )

    def on_refused(self) -> None:
        """The new certificate refused MAX_REFUSALS times before its confirmation: back to the old one."""
        if self.state().get("phase") != "switched" or not self.previous_key.exists():
            return
        self.refusals += 1
        if self.refusals >= MAX_REFUSALS:
            log.warning("the new certificate is refused: back to the previous one")
            os.replace(self.previous_key, self.key_file)
            os.replace(self.previous_cert, self.cert_file)
            self._save(None)
            self.refusals = 0
