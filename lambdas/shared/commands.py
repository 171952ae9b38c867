"""The signed command document: one module writes it, and the same module checks it on the device.

A command travels to a device inside an IoT job document. Whoever can create jobs is not thereby able
to command devices: the document is signed by the stage's KMS key (ECC_NIST_P256, ECDSA_SHA_256), and the
device agent runs every document through `verify` with the public keys it trusts before acting on it.

The signed document (every field is signed, except `signature` itself):

    {"v": 1, "command": "reboot", "params": {}, "target": {"thing": "SN-0001"},
     "issued_at": 1796083200, "not_after": 1796086800, "nonce": "d3Jx...", "key_id": "<64 hex>",
     "issuer": "alice@example.com", "signature": "<base64 of the DER ECDSA signature>"}

* `target` is `{"thing": name}` or `{"group": name}` (a job on a thing group carries one document for
  every member, so it names the group; the device checks the group against the groups it knows it is in).
* `key_id` is the SHA-256 (hex) of the signing key's DER SubjectPublicKeyInfo: the device computes it
  from each PEM it trusts, so a new key can be rolled out next to the old one (`trusted_keys` holds both)
  and no registry of key ids is needed.
* The bytes signed are `canonical_bytes(document without "signature")`: JSON with sorted keys, no
  whitespace, UTF-8 (not ASCII-escaped). Floats are refused (their text differs between languages and
  would break the signature on a device written in another one): send numbers as integers or strings.
* KMS returns ECDSA signatures DER-encoded (ANSI X9.62-2005 / RFC 3279 2.2.3: "Sign", Response Syntax,
  https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html), which is what
  `cryptography`'s `ec.ECDSA(SHA256())` verifies.

The job document wraps it, `{"command": <signed document>}`, plus unsigned fields IoT Jobs rewrites on
delivery (the software-update URL placeholder `${aws:iot:s3-presigned-url:...}` becomes a presigned URL,
so it cannot be inside the signature; the signed `params` carry the artifact's SHA-256 and size instead).

Refusals (`CommandRefused.reason`) are stable codes a device reports as its job's REJECTED reason.
Stdlib only at import; `cryptography` is imported by the functions that verify or load keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from .topics import THING_NAME  # relative: also imported as fleetwarden_contracts (the device agent)

FORMAT_VERSION = 1
COMMANDS = ("config", "reboot", "shutdown", "software-update", "remote-access", "rotate-certificate")
SIGNING_ALGORITHM = "ECDSA_SHA_256"  # KMS SigningAlgorithm for an ECC_NIST_P256 key
MAX_DOCUMENT_BYTES = 16 * 1024  # IoT job documents may be up to 32 KB; half leaves room for the wrapper
MAX_LIFETIME_SECONDS = 30 * 24 * 3600
CLOCK_SKEW_SECONDS = 300  # a device clock this far behind still accepts a fresh document
_MAX_SAFE_INT = 2**53 - 1  # integers every JSON parser reads exactly
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 random bytes, base64url without padding
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")
_NAME = THING_NAME  # thing and thing group names (CreateThing/CreateThingGroup)
_SIGNED_FIELDS = frozenset(("v", "command", "params", "target", "issued_at", "not_after", "nonce", "key_id",
                            "issuer"))

# Why a document was refused: stable codes for job status details and metrics.
MALFORMED = "malformed"
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown-key"
BAD_SIGNATURE = "bad-signature"
UNKNOWN_COMMAND = "unknown-command"
NOT_YET_VALID = "not-yet-valid"
EXPIRED = "expired"
MISTARGETED = "mistargeted"
REPLAYED = "replayed"
BAD_PARAMS = "bad-params"  # from check_params, which the device runs after verify


class CommandRefused(ValueError):
    """The document must not be acted on; `reason` is one of the codes above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NonceStore(Protocol):
    def check_and_add(self, nonce: str, not_after: int) -> bool:
        """Record the nonce until `not_after`; False if it was already recorded (a replay)."""


def canonical_bytes(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8. ValueError for floats, unsafe integers and non-JSON types."""
    _check_canonical(value, "document")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _check_canonical(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            value.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, a ValueError
        return
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ValueError(f"{where}: integer {value} is beyond 2**53-1; send it as a string")
        return
    if isinstance(value, float):
        raise ValueError(f"{where}: floats are not canonical across languages; send an integer or a string")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings")
            _check_canonical(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_canonical(item, f"{where}[{index}]")
        return
    raise ValueError(f"{where}: {type(value).__name__} is not JSON")


def key_id(public_key_der: bytes) -> str:
    """The key id documents carry: SHA-256 of the DER SubjectPublicKeyInfo (KMS GetPublicKey's PublicKey)."""
    return hashlib.sha256(public_key_der).hexdigest()


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def unsigned_document(*, command: str, params: Mapping[str, Any], issuer: str, key: str,
                      issued_at: int, lifetime_seconds: int, thing: str | None = None,
                      group: str | None = None, nonce: str | None = None) -> dict[str, Any]:
    """The fields to sign, checked as `verify` will check them (so the backend never signs a dud)."""
    if (thing is None) == (group is None):
        raise ValueError("a command targets exactly one thing or one thing group")
    document = {"v": FORMAT_VERSION, "command": command, "params": dict(params),
                "target": {"thing": thing} if thing is not None else {"group": group},
                "issued_at": int(issued_at), "not_after": int(issued_at) + int(lifetime_seconds),
                "nonce": nonce or new_nonce(), "key_id": key, "issuer": issuer}
    try:
        _check_fields(document)
    except CommandRefused as refused:
        raise ValueError(refused.detail) from None
    canonical_bytes(document)
    return document


def sign(document: Mapping[str, Any], signer: Callable[[bytes], bytes]) -> dict[str, Any]:
    """The document with its signature; `signer` maps the canonical bytes to a DER ECDSA-SHA256 signature
    (KMS Sign with MessageType RAW, or a local private key in tests and the demo)."""
    signature = signer(canonical_bytes(document))
    return {**document, "signature": base64.b64encode(signature).decode("ascii")}


def job_document(signed: Mapping[str, Any], **unsigned: Any) -> dict[str, Any]:
    """The IoT job document: the signed command plus fields Jobs may rewrite (e.g. `artifact_url`)."""
    return {"command": dict(signed), **unsigned}


def load_public_keys(pems: Collection[bytes | str]) -> dict[str, Any]:
    """{key id: public key} for the PEMs a device trusts (P-256 only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = {}
    for pem in pems:
        public = serialization.load_pem_public_key(pem.encode("ascii") if isinstance(pem, str) else pem)
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise ValueError("command signing keys are EC P-256 (KMS ECC_NIST_P256)")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        keys[key_id(der)] = public
    return keys


def parse(raw: bytes | str) -> dict[str, Any]:
    """A document from the wire; duplicate keys are refused (a second `command` must not hide behind the
    first one that a lenient parser would keep)."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            raise CommandRefused(MALFORMED, "duplicate keys")
        return dict(pairs)

    if len(raw) > MAX_DOCUMENT_BYTES * 4:
        raise CommandRefused(MALFORMED, "document too large")
    try:
        value = json.loads(raw, object_pairs_hook=no_duplicates, parse_float=_refuse_float,
                           parse_constant=_refuse_float)
    except CommandRefused:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise CommandRefused(MALFORMED, f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise CommandRefused(MALFORMED, "not a JSON object")
    return value


def _refuse_float(text: str) -> Any:
    raise CommandRefused(MALFORMED, f"non-integer number {text[:20]}")


def verify(document: Mapping[str, Any], *, trusted_keys: Mapping[str, Any], thing: str, now: float,
           groups: Collection[str] = (), nonces: NonceStore | None = None) -> dict[str, Any]:
    """The signed fields if the document may be acted on by `thing` at `now`; CommandRefused otherwise.

    Checks, in order: shape, signature (before anything a forger controls is believed), command, time,
    target, and last the nonce (a refused document never burns its nonce)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(document, Mapping):
        raise CommandRefused(MALFORMED, "not a JSON object")
    signature_text = document.get("signature")
    if not isinstance(signature_text, str) or not signature_text:
        raise CommandRefused(UNSIGNED, "no signature")
    fields = {key: value for key, value in document.items() if key != "signature"}
    _check_fields(fields)
    public = trusted_keys.get(fields["key_id"])
    if public is None:
        raise CommandRefused(UNKNOWN_KEY, f"key {fields['key_id'][:16]}... is not trusted")
    try:
        signature = base64.b64decode(signature_text, validate=True)
        message = canonical_bytes(fields)
    except ValueError as error:
        raise CommandRefused(MALFORMED, str(error)) from None
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CommandRefused(BAD_SIGNATURE, "signature does not match the document") from None
    if fields["command"] not in COMMANDS:
        raise CommandRefused(UNKNOWN_COMMAND, f"unknown command {fields['command']!r}")
    if fields["issued_at"] > now + CLOCK_SKEW_SECONDS:
        raise CommandRefused(NOT_YET_VALID, "issued in the future")
    if now >= fields["not_after"]:
        raise CommandRefused(EXPIRED, "past not_after")
    target = fields["target"]
    if target.get("thing", thing) != thing or ("group" in target and target["group"] not in groups):
        raise CommandRefused(MISTARGETED, f"addressed to {target}")
    if nonces is not None and not nonces.check_and_add(fields["nonce"], fields["not_after"]):
        raise CommandRefused(REPLAYED, "nonce already used")
    return fields


def _check_fields(fields: Mapping[str, Any]) -> None:
    """Shape only; no field is trusted until the signature over it is checked."""
    missing = _SIGNED_FIELDS - fields.keys()
    extra = fields.keys() - _SIGNED_FIELDS
    if missing or extra:
        raise CommandRefused(MALFORMED, f"fields missing {sorted(missing)} / unexpected {sorted(extra)}")
    if fields["v"] != FORMAT_VERSION:
        raise CommandRefused(MALFORMED, f"format version {fields['v']!r}")
    if not isinstance(fields["command"], str) or not isinstance(fields["params"], Mapping):
        raise CommandRefused(MALFORMED, "command must be a string and params an object")
    target = fields["target"]
    if (not isinstance(target, Mapping) or len(target) != 1 or not target.keys() <= {"thing", "group"}
            or not isinstance(next(iter(target.values())), str) or not _NAME.fullmatch(next(iter(target.values())))):
        raise CommandRefused(MALFORMED, "target must be {\"thing\": name} or {\"group\": name}")
    issued_at, not_after = fields["issued_at"], fields["not_after"]
    if not all(type(t) is int and 0 <= t <= _MAX_SAFE_INT for t in (issued_at, not_after)):
        raise CommandRefused(MALFORMED, "issued_at and not_after are integer epoch seconds")
    if not 0 < not_after - issued_at <= MAX_LIFETIME_SECONDS:
        raise CommandRefused(MALFORMED, f"lifetime must be 1 s to {MAX_LIFETIME_SECONDS} s")
    if not isinstance(fields["nonce"], str) or not _NONCE.match(fields["nonce"]):
        raise CommandRefused(MALFORMED, "nonce must be 16 random bytes in base64url")
    if not isinstance(fields["key_id"], str) or not _KEY_ID.match(fields["key_id"]):
        raise CommandRefused(MALFORMED, "key_id must be 64 lowercase hex characters")
    if not isinstance(fields["issuer"], str) or not 0 < len(fields["issuer"]) <= 256:
        raise CommandRefused(MALFORMED, "issuer must be 1-256 characters")



# --- params per command: the issuer refuses what the device would refuse ---------------------------

MAX_REASON = 256
MAX_DELAY_SECONDS = 3600
TUNNEL_SERVICES = ("SSH",)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
_TUNNEL_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_INCIDENT = re.compile(r"^[A-Za-z0-9:._-]{1,128}$")


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _whole(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


# command -> {param: (required, check)}; any other key is refused.
PARAMS: dict[str, dict[str, tuple[bool, Callable[[Any], bool]]]] = {
    "config": {"desired": (True, lambda v: isinstance(v, Mapping) and len(v) > 0)},
    "reboot": {"delay_seconds": (False, lambda v: _whole(v, 0, MAX_DELAY_SECONDS)),
               "reason": (False, lambda v: _text(v, MAX_REASON))},
    "shutdown": {"reason": (False, lambda v: _text(v, MAX_REASON)),
                 "incident": (False, lambda v: isinstance(v, str) and bool(_INCIDENT.match(v)))},
    "software-update": {"version": (True, lambda v: isinstance(v, str) and bool(_VERSION.match(v))),
                        "sha256": (True, lambda v: isinstance(v, str) and bool(_SHA256.match(v))),
                        "size": (True, lambda v: _whole(v, 1, _MAX_SAFE_INT))},
    "remote-access": {"tunnel_id": (True, lambda v: isinstance(v, str) and bool(_TUNNEL_ID.match(v))),
                      "services": (True, lambda v: isinstance(v, list) and len(v) == 1
                                   and v[0] in TUNNEL_SERVICES),
                      "expires_at": (True, lambda v: _whole(v, 0, _MAX_SAFE_INT))},
    "rotate-certificate": {"reason": (False, lambda v: _text(v, MAX_REASON))},
}
assert set(PARAMS) == set(COMMANDS)


def check_params(command: str, params: Mapping[str, Any]) -> None:
    """CommandRefused(UNKNOWN_COMMAND | BAD_PARAMS) unless `params` is what `command` takes (table above)."""
    spec = PARAMS.get(command)
    if spec is None:
        raise CommandRefused(UNKNOWN_COMMAND, f"unknown command {command!r}")
    if not isinstance(params, Mapping):
        raise CommandRefused(BAD_PARAMS, "params must be an object")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise CommandRefused(BAD_PARAMS, f"{command} takes no {', '.join(map(str, unknown))}")
    for name, (required, check) in spec.items():
        if name not in params:
            if required:
                raise CommandRefused(BAD_PARAMS, f"{command} needs {name}")
        elif not check(params[name]):
            raise CommandRefused(BAD_PARAMS, f"{command}: {name} is not valid")
