"""Certificate rotation: the device's CSR in, a certificate out, the old certificate retired only once the
device has proved the new one works. Plain logic over injected clients, a table and a clock.

The rule (`cmd/+/certs/+`) adds `topic(2) AS thing`, `topic(4) AS step`, `principal() AS principal` and
`clientid() AS client_id` to the device's JSON ("Functions", principal() and clientid(),
https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-functions.html). Only `principal` is
believed: it is the certificate the broker authenticated (for an X.509 MQTT client, its certificate
id, 64 hex; anything else is refused as `not-attached`, the safe way round). The device policy lets a
certificate publish only under its own thing's topics, and the function checks again that the
principal is attached to the thing named by the topic (ListThingPrincipals).

Request (`cmd/<thing>/certs/request`, `{"csr", "request_id"}`) checks, each refusal answered on
`.../response/rejected` with `{"request_id", "reason", "detail"}`, counted (RotationRefused by reason)
and audited:
  not-attached   the publishing certificate is not attached to the thing
  malformed      no CSR / request id of the documented shape
  bad-csr        not a PEM CSR, or its signature does not verify (proof of the private key)
  wrong-cn       the subject CN is not exactly the thing name
  weak-key       the key is neither EC P-256 nor RSA >= 2048
  ca-requested   the CSR asks for basicConstraints CA:TRUE
  rotation-pending  the device asks again with its NEW (unconfirmed) certificate: confirm first
Accepted, in an order a retry can resume at any step (Lambda retries the whole event: handler.py):
  1. the row records the intent `{thing, old, csr_sha256, public_key_sha256, request_id, status: issuing}`
     BEFORE the certificate exists;
  2. CreateCertificateFromCsr(setAsActive=False) ("Creates an X.509 certificate using the specified
     certificate signing request", https://docs.aws.amazon.com/iot/latest/apireference/
     API_CreateCertificateFromCsr.html), on a client that never re-sends it: the call is not
     idempotent ("Reusing the same certificate signing request (CSR) results in a distinct
     certificate", same page), so a re-send whose first answer was lost would mint a second one;
  3. the row `{..., new, status: issued, attached: false}`;
  4. audited `certificate.rotation-issued` (once: its event id is the certificate's), AttachPolicy,
     AttachThingPrincipal, UpdateCertificate ACTIVE, the row marked attached (all idempotent);
  5. the answer on `.../response/accepted` `{"request_id", "certificate_id", "certificate_pem"}`.
A retry that finds the intent without a certificate looks for the one a lost answer (or a dead
invocation) created: ListCertificates newest first back to the intent's time, INACTIVE ones only
(a certificate is INACTIVE until its row records it), the one whose public key is the CSR's
(DescribeCertificate). It adopts it, or creates the certificate if there is none: one certificate
per rotation, never an ACTIVE one the row does not know. The same CSR again once issued re-answers
with the same certificate. A different CSR while one is pending (the device lost its new key) sets
the pending, never-confirmed certificate INACTIVE first (`certificate.rotation-superseded`).

Confirm (`cmd/<thing>/certs/confirm`, `{"certificate_id"}`) must come from the NEW certificate
(principal == the pending row's new certificate): only then is the old one set INACTIVE
(UpdateCertificate; "Devices cannot use a certificate that is not in the ACTIVE state to reconnect",
API_UpdateCertificate.html) and `.../response/confirmed` `{"certificate_id", "retired": [old]}` sent.
A confirmation from the old certificate is refused (`not-new-certificate`): the old identity is never
retired by itself, so the device always has one that works. A confirmation repeated (Lambda's retry
of one whose answer was not sent, or the device asking again) re-answers `confirmed`; it retires nothing
more (the audit record is written once, keyed by the new certificate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from shared import audit, topics

REQUEST, CONFIRM = topics.ROTATION_REQUEST, topics.ROTATION_CONFIRM
ISSUING, ISSUED, CONFIRMED = "issuing", "issued", "confirmed"
NOT_ATTACHED, MALFORMED, BAD_CSR, WRONG_CN = "not-attached", "malformed", "bad-csr", "wrong-cn"
WEAK_KEY, CA_REQUESTED, PENDING = "weak-key", "ca-requested", "rotation-pending"
NO_ROTATION, NOT_NEW, MISMATCH = "no-rotation", "not-new-certificate", "certificate-mismatch"
REFUSED_METRIC = "RotationRefused"
ISSUED_METRIC, CONFIRMED_METRIC = "CertificatesRotated", "RotationsConfirmed"
MAX_CSR_BYTES = 8192
MIN_RSA_BITS = 2048
_THING = topics.THING_NAME
_CERT_ID = re.compile(r"^[0-9a-f]{64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_quiet = logging.getLogger(__name__)
# How far IoT's creationDate may precede the function's clock when a retry looks for the certificate a
# lost CreateCertificateFromCsr made (clocks of two services; unverified, generous).
CLOCK_SKEW_SECONDS = 300
MAX_SEARCH_PAGES = 20  # 5,000 certificates newest first: far more than an account mints in the retry window


class Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Result:
    outcome: str  # accepted | confirmed | rejected | ignored
    reason: str | None = None
    certificate_id: str | None = None


def check_csr(pem: Any, thing: str) -> Any:
    """The parsed CSR if it may become `thing`'s certificate; Refused otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    if not isinstance(pem, str) or not 0 < len(pem) <= MAX_CSR_BYTES:
        raise Refused(MALFORMED, f"csr must be a PEM string of at most {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
        valid = csr.is_signature_valid
    except (ValueError, UnicodeEncodeError):
        raise Refused(BAD_CSR, "not a PEM certificate signing request") from None
    if not valid:
        raise Refused(BAD_CSR, "the CSR signature does not verify")
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [thing]:
        raise Refused(WRONG_CN, f"the subject CN must be exactly {thing}")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise Refused(WEAK_KEY, f"EC keys must be P-256, not {key.curve.name}")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise Refused(WEAK_KEY, f"RSA keys must be at least {MIN_RSA_BITS} bits, not {key.key_size}")
    else:
        raise Refused(WEAK_KEY, "the key must be EC P-256 or RSA >= 2048")
    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise Refused(CA_REQUESTED, "a device certificate must not be a CA")
    return csr


class Rotator:
    def __init__(self, *, iot: Any, iot_data: Any, table: Any, audit_table: Any, policy_name: str,
                 count: Callable[..., None], now: Callable[[], float], logger: Any = _quiet,
                 iot_create: Any = None):
        """`iot_create`: the client CreateCertificateFromCsr goes through, one that never re-sends
        (handler.py); defaults to `iot`."""
        self.iot, self.iot_data, self.table, self.audit_table = iot, iot_data, table, audit_table
        self.iot_create = iot_create or iot
        self.policy_name, self.count, self.now, self.log = policy_name, count, now, logger

    def handle(self, event: Mapping[str, Any]) -> Result:
        thing, step, principal = event.get("thing"), event.get("step"), event.get("principal")
        if not isinstance(thing, str) or not _THING.fullmatch(thing) or step not in (REQUEST, CONFIRM):
            # Not from our rule's topics (the SQL selects only cmd/<thing>/certs/<step>): nowhere to answer.
            self.log.warning("rotation event ignored", extra={"reason": "not-a-rotation-topic"})
            self.count(REFUSED_METRIC, reason=MALFORMED)
            return Result("ignored", MALFORMED)
        request_id = event.get("request_id") if isinstance(event.get("request_id"), str) else None
        try:
            if not isinstance(principal, str) or not _CERT_ID.match(principal):
                raise Refused(NOT_ATTACHED, "the publisher is not an X.509 certificate")
            return self._request(thing, principal, event) if step == REQUEST else self._confirm(thing, principal, event)
        except Refused as refused:
            return self._refuse(thing, principal, request_id, step, refused)

    # ---- request --------------------------------------------------------------------------------

    def _request(self, thing: str, principal: str, event: Mapping[str, Any]) -> Result:
        request_id = event.get("request_id")
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            raise Refused(MALFORMED, "request_id must be 1-64 of [A-Za-z0-9_-]")
        self._check_attached(thing, principal)
        csr_pem = event.get("csr")
        csr = check_csr(csr_pem, thing)
        csr_hash = hashlib.sha256(csr_pem.encode("ascii")).hexdigest()

        row = self.table.get_item(Key={"thing": thing}, ConsistentRead=True).get("Item")
        if row and row.get("status") == ISSUED:
            if principal == row["new_certificate_id"]:
                raise Refused(PENDING, "confirm the new certificate before rotating again")
            if principal == row["old_certificate_id"] and row.get("csr_sha256") == csr_hash:
                return self._finish_issue(thing, row, request_id)  # a repeat or a retry: same certificate
            # Another CSR (the device lost its new key) or another of the thing's certificates: the pending,
            # never-confirmed certificate is retired before the row forgets it.
            self._update_certificate(row["new_certificate_id"], "INACTIVE")
            self._supersede(thing, row["new_certificate_id"])
        elif row and row.get("status") == ISSUING:
            minted = self._minted(row)  # what a lost or dead CreateCertificateFromCsr made for it
            if principal == row["old_certificate_id"] and row.get("csr_sha256") == csr_hash:
                for extra in minted[1:]:  # (one create per attempt never makes two; kept INACTIVE if it did)
                    self._supersede(thing, extra["certificateId"])
                if minted:  # the lost call's certificate (its invocation never counted it)
                    self.count(ISSUED_METRIC)
                    return self._issued(thing, row, minted[0], request_id)
                return self._create(thing, row, csr_pem, request_id)
            for orphan in minted:  # another request replaces this one: its certificate stays INACTIVE
                self._supersede(thing, orphan["certificateId"])
        intent = {"thing": thing, "old_certificate_id": principal, "csr_sha256": csr_hash,
                  "public_key_sha256": _key_sha256(csr.public_key()), "request_id": request_id,
                  "status": ISSUING, "requested_at": audit.iso_utc(self.now())}
        self.table.put_item(Item=intent)
        return self._create(thing, intent, csr_pem, request_id)

    def _create(self, thing: str, intent: Mapping[str, Any], csr_pem: str, request_id: str) -> Result:
        created = self.iot_create.create_certificate_from_csr(certificateSigningRequest=csr_pem, setAsActive=False)
        self.count(ISSUED_METRIC)
        return self._issued(thing, intent, created, request_id, pem=created["certificatePem"])

    def _issued(self, thing: str, intent: Mapping[str, Any], certificate: Mapping[str, Any], request_id: str,
                pem: str | None = None) -> Result:
        row = {**intent, "new_certificate_id": certificate["certificateId"],
               "new_certificate_arn": certificate["certificateArn"], "status": ISSUED,
               "issued_at": audit.iso_utc(self.now()), "attached": False}
        self.table.put_item(Item=row)
        return self._finish_issue(thing, row, request_id, pem=pem)

    def _finish_issue(self, thing: str, row: Mapping[str, Any], request_id: str, pem: str | None = None) -> Result:
        """Audit (once), attach, activate (all idempotent), mark attached, answer. Resumable from the row."""
        arn, new_id = row["new_certificate_arn"], row["new_certificate_id"]
        if not row.get("attached"):
            self._audit("certificate.rotation-issued", thing, {"old_certificate_id": row["old_certificate_id"],
                                                               "new_certificate_id": new_id},
                        event_id=f"rotation-issued:{new_id}")
            self.iot.attach_policy(policyName=self.policy_name, target=arn)
            self.iot.attach_thing_principal(thingName=thing, principal=arn)
            # ACTIVE only now that the row knows it: an INACTIVE certificate is one a retry may adopt.
            self.iot.update_certificate(certificateId=new_id, newStatus="ACTIVE")
            self.table.update_item(Key={"thing": thing}, UpdateExpression="SET attached = :t",
                                   ExpressionAttributeValues={":t": True})
        if pem is None:
            pem = self.iot.describe_certificate(certificateId=new_id)["certificateDescription"]["certificatePem"]
        self._publish(thing, topics.ROTATION_ACCEPTED,
                      {"request_id": request_id, "certificate_id": new_id, "certificate_pem": pem})
        return Result("accepted", certificate_id=new_id)

    def _minted(self, intent: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The INACTIVE certificates carrying the intent's public key created since it was recorded, oldest
        first. ListCertificates "ascendingOrder: ... If True, the results are returned in ascending order,
        based on the creation date" (https://docs.aws.amazon.com/iot/latest/apireference/
        API_ListCertificates.html); False read as newest first (the page says nothing of False: unverified),
        stopping at the first one older than the intent, and after MAX_SEARCH_PAGES at most. If the search
        missed it, the retry mints another and the missed one stays as the lost call left it: INACTIVE,
        without policy or thing, so it connects no one."""
        want = intent.get("public_key_sha256")
        since = _epoch(intent["requested_at"]) - CLOCK_SKEW_SECONDS
        found: list[dict[str, Any]] = []
        pages = self.iot.get_paginator("list_certificates").paginate(
            ascendingOrder=False, PaginationConfig={"PageSize": 250, "MaxItems": 250 * MAX_SEARCH_PAGES})
        for page in pages:
            for listed in page.get("certificates", []):
                if listed["creationDate"].timestamp() < since:
                    return found[::-1]
                if listed.get("status") != "INACTIVE":
                    continue
                pem = self.iot.describe_certificate(
                    certificateId=listed["certificateId"])["certificateDescription"]["certificatePem"]
                if _certificate_key_sha256(pem) == want:
                    found.append(listed)
        return found[::-1]

    def _supersede(self, thing: str, certificate_id: str) -> None:
        self._audit("certificate.rotation-superseded", thing, {"certificate_id": certificate_id},
                    event_id=f"rotation-superseded:{certificate_id}")

    # ---- confirm --------------------------------------------------------------------------------

    def _confirm(self, thing: str, principal: str, event: Mapping[str, Any]) -> Result:
        self._check_attached(thing, principal)
        row = self.table.get_item(Key={"thing": thing}, ConsistentRead=True).get("Item")
        status = row.get("status") if row else None
        if status == CONFIRMED and principal == row.get("new_certificate_id") \
                and event.get("certificate_id") == principal:
            return self._finish_confirm(thing, row)  # a repeat, or the retry of one whose answer was not sent
        if status != ISSUED or not row.get("attached"):
            raise Refused(NO_ROTATION, "no rotation of this thing awaits confirmation")
        if principal != row["new_certificate_id"]:
            raise Refused(NOT_NEW, "confirm while connected with the NEW certificate")
        if event.get("certificate_id") != principal:
            raise Refused(MISMATCH, "certificate_id must be the certificate the device is connected with")
        self._update_certificate(row["old_certificate_id"], "INACTIVE")
        try:
            self.table.update_item(Key={"thing": thing}, UpdateExpression="SET #s = :c, confirmed_at = :at",
                                   ConditionExpression="#s = :i AND new_certificate_id = :n",
                                   ExpressionAttributeNames={"#s": "status"},
                                   ExpressionAttributeValues={":c": CONFIRMED, ":i": ISSUED, ":n": principal,
                                                              ":at": audit.iso_utc(self.now())})
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            # botocore re-sent the update after its first attempt's answer was lost: that attempt confirmed
            # this very rotation (or another writer moved the row on: then it is not ours to answer).
            row = self.table.get_item(Key={"thing": thing}, ConsistentRead=True).get("Item") or {}
            if row.get("status") != CONFIRMED or row.get("new_certificate_id") != principal:
                raise Refused(NO_ROTATION, "no rotation of this thing awaits confirmation") from None
        self.count(CONFIRMED_METRIC)
        return self._finish_confirm(thing, row)

    def _finish_confirm(self, thing: str, row: Mapping[str, Any]) -> Result:
        old, new = row["old_certificate_id"], row["new_certificate_id"]
        self._audit("certificate.rotation-confirmed", thing, {"old_certificate_id": old, "new_certificate_id": new},
                    event_id=f"rotation-confirmed:{new}")
        self._publish(thing, topics.ROTATION_CONFIRMED, {"certificate_id": new, "retired": [old]})
        return Result("confirmed", certificate_id=new)

    # ---- helpers --------------------------------------------------------------------------------

    def _check_attached(self, thing: str, principal: str) -> None:
        try:
            pages = self.iot.get_paginator("list_thing_principals").paginate(thingName=thing)
            attached = {arn.rsplit("/", 1)[-1] for page in pages for arn in page.get("principals", [])}
        except self.iot.exceptions.ResourceNotFoundException:
            attached = set()
        if principal not in attached:
            raise Refused(NOT_ATTACHED, "the publishing certificate is not attached to this thing")

    def _update_certificate(self, certificate_id: str, status: str) -> None:
        try:
            self.iot.update_certificate(certificateId=certificate_id, newStatus=status)
        except self.iot.exceptions.CertificateStateException:
            pass  # already not ACTIVE (e.g. REVOKED by containment): it connects no one either way

    def _refuse(self, thing: str, principal: Any, request_id: str | None, step: str, refused: Refused) -> Result:
        self.log.warning("rotation refused", extra={"thing": thing, "step": step, "reason": refused.reason})
        self.count(REFUSED_METRIC, reason=refused.reason)
        self._audit(f"certificate.rotation-{step}-refused", thing, {
            "reason": refused.reason, "principal": principal if isinstance(principal, str) and _CERT_ID.match(principal) else "-"})
        answer = {"reason": refused.reason, "detail": refused.detail}
        if request_id is not None and _REQUEST_ID.match(request_id):
            answer["request_id"] = request_id
        self._publish(thing, topics.ROTATION_REJECTED, answer)
        return Result("rejected", refused.reason)

    def _publish(self, thing: str, outcome: str, payload: Mapping[str, Any]) -> None:
        self.iot_data.publish(topic=topics.cert_rotation_response_topic(thing, outcome), qos=1,
                              payload=json.dumps(payload).encode("utf-8"))

    def _audit(self, action: str, thing: str, details: Mapping[str, Any], event_id: str | None = None) -> None:
        audit.record(self.audit_table, action=action, actor=f"thing:{thing}", target=thing, details=details,
                     now=self.now, logger=self.log, event_id=event_id)


def _key_sha256(public_key: Any) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo: what a CSR and the certificate made from it share."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _certificate_key_sha256(pem: str) -> str | None:
    from cryptography import x509

    try:
        return _key_sha256(x509.load_pem_x509_certificate(pem.encode("ascii")).public_key())
    except ValueError:
        return None


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
