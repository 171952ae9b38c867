"""CloudFormation custom resource (commands.public_key.handler.lambda_handler): the signing key's public key
as PEM, for the stack output devices are built with.

CloudFormation sends Create/Update/Delete with a presigned `ResponseURL`; the function PUTs the result
there as JSON `{"Status", "Reason", "PhysicalResourceId", "StackId", "RequestId", "LogicalResourceId",
"Data"}` ("Custom resource response objects", https://docs.aws.amazon.com/AWSCloudFormation/latest/
UserGuide/crpg-ref-responses.html). `Data.Pem` and `Data.KeyId` are read with Fn::GetAtt. GetPublicKey
returns the DER SubjectPublicKeyInfo (API_GetPublicKey.html); the key id is its SHA-256, as in documents.
A failure answers FAILED (never leaving CloudFormation waiting for an hour).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from shared.command_jobs import KmsSigner
from shared.runtime import client, handler_runtime

runtime = handler_runtime("command-public-key")
logger = runtime.logger


def answer(event: dict[str, Any], status: str, data: dict[str, str] | None = None, reason: str = "") -> dict:
    return {"Status": status, "Reason": reason[:500] or status,
            "PhysicalResourceId": event.get("PhysicalResourceId") or f"public-key:{event['ResourceProperties']['KeyArn']}",
            "StackId": event["StackId"], "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"], "Data": data or {}}


def respond(event: dict[str, Any], kms: Any) -> dict[str, Any]:
    if event["RequestType"] == "Delete":
        return answer(event, "SUCCESS")
    try:
        signer = KmsSigner(kms, event["ResourceProperties"]["KeyArn"])
        return answer(event, "SUCCESS", {"Pem": signer.public_pem(), "KeyId": signer.key_id})
    except Exception as error:  # noqa: BLE001 - CloudFormation must hear back either way
        logger.exception("could not read the public key")
        return answer(event, "FAILED", reason=f"GetPublicKey failed: {type(error).__name__}")


def send(url: str, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(data))})
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - CloudFormation's presigned https URL
        pass


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> None:
    send(event["ResponseURL"], respond(event, client("kms")))
