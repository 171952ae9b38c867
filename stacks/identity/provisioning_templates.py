"""IoT provisioning template bodies. JITP (factory CA) and fleet provisioning (claim
certificate) create the same device: one function writes both, so they cannot drift."""

from __future__ import annotations

import json

# Parameters IoT fills in from the device certificate (JITP) or the device request (fleet).
CERT_ID = "AWS::IoT::Certificate::Id"
CERT_CN = "AWS::IoT::Certificate::CommonName"
SERIAL = "SerialNumber"
TOKEN = "ProvisioningToken"


def _device_template(thing_name_parameter: str, extra_parameters: dict, *, thing_type: str,
                     fleet_group: str, device_policy: str) -> str:
    thing_name = {"Ref": thing_name_parameter}
    body = {
        "Parameters": {CERT_ID: {"Type": "String"}, thing_name_parameter: {"Type": "String"},
                       **extra_parameters},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": thing_name,
                    "ThingTypeName": thing_type,
                    "ThingGroups": [fleet_group],
                    "AttributePayload": {"serial": thing_name},
                },
                # Re-provisioning an existing device keeps its groups (e.g. quarantine).
                "OverrideSettings": {"AttributePayload": "MERGE", "ThingTypeName": "REPLACE",
                                     "ThingGroups": "DO_NOTHING"},
            },
            "certificate": {
                "Type": "AWS::IoT::Certificate",
                "Properties": {"CertificateId": {"Ref": CERT_ID}, "Status": "ACTIVE"},
            },
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": device_policy}},
        },
    }
    return json.dumps(body, separators=(",", ":"))


def jitp_template(*, thing_type: str, fleet_group: str, device_policy: str) -> str:
    """Factory devices: thing name = the certificate's common name (the serial)."""
    return _device_template(CERT_CN, {}, thing_type=thing_type, fleet_group=fleet_group,
                            device_policy=device_policy)


def fleet_provisioning_template(*, thing_type: str, fleet_group: str, device_policy: str) -> str:
    """Field devices: the serial and one-time token come in the RegisterThing request; the
    pre-provisioning hook checks the token before IoT creates anything."""
    return _device_template(SERIAL, {TOKEN: {"Type": "String"}}, thing_type=thing_type,
                            fleet_group=fleet_group, device_policy=device_policy)
