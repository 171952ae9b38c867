"""Field association over the real broker: the agent's own key, the claim certificate,
CreateCertificateFromCsr and RegisterThing; the certificate is kept only when the hook allowed it."""

from __future__ import annotations

import pytest
from fleetwarden_device import identity
from fleetwarden_device.agent import Agent
from fleetwarden_device.config import from_dict
from fleetwarden_device.provisioning import ProvisioningRefused, provision

from device.local import acl
from device.local.provisioning_service import ProvisioningService
from tests.device.conftest import CLAIM_TEMPLATE, HOST, running, wait_until


@pytest.fixture(scope="module")
def fleet_provisioning(backend, pki):
    tokens = {"tok-SN-FIELD-0001": "SN-FIELD-0001"}
    registered = []

    def hook(event):  # one-time tokens bound to a serial, as the real hook decides (tested in tests/identity)
        serial = event["parameters"].get("SerialNumber")
        allowed = tokens.pop(event["parameters"].get("ProvisioningToken"), None) == serial
        return {"allowProvisioning": allowed}

    service = ProvisioningService(
        backend,
        pki,
        CLAIM_TEMPLATE,
        hook=hook,
        register=lambda thing, cid, cert: registered.append((thing, cid)),
    )
    return service, registered


@pytest.fixture(scope="module")
def claim(pki, tmp_path_factory):
    return pki.device(acl.CLAIM_USER, tmp_path_factory.mktemp("claim"))


def field_config(tmp_path, broker, serial):
    return from_dict(
        {
            "thing": serial,
            "endpoint": HOST,
            "port": broker.port,
            "stage": "local",
            "ca_file": str(broker.pki.ca_file),
            "cert_file": "device.cert.pem",
            "key_file": "device.key.pem",
            "state_dir": "state",
            "telemetry_interval": 30,
            "metrics_interval": 30,
            "backoff_base": 0.05,
            "backoff_cap": 0.3,
        },
        tmp_path,
    )


def test_a_field_device_provisions_itself_once_and_connects_with_its_own_certificate(
    broker, fleet_provisioning, claim, tmp_path
):
    _, registered = fleet_provisioning
    config = field_config(tmp_path / "field", broker, "SN-FIELD-0001")
    thing = provision(
        config,
        claim_cert=claim.cert_file,
        claim_key=claim.key_file,
        template=CLAIM_TEMPLATE,
        token="tok-SN-FIELD-0001",
        timeout=10,
    )
    assert thing == "SN-FIELD-0001" and registered[-1][0] == thing
    assert config.cert_file.exists() and identity.load_key(config.key_file)
    agent = Agent(config)
    with running(agent):
        assert wait_until(agent.connected.is_set)
    assert wait_until(lambda: "New client connected from" in broker.log() and "as claim-SN-FIELD-0001" in broker.log())

    # The token is spent: a second device (its own key) presenting it gets no certificate.
    thief = field_config(tmp_path / "thief", broker, "SN-FIELD-0001")
    with pytest.raises(ProvisioningRefused, match="RegisterThing refused: AccessDenied"):
        provision(
            thief,
            claim_cert=claim.cert_file,
            claim_key=claim.key_file,
            template=CLAIM_TEMPLATE,
            token="tok-SN-FIELD-0001",
            timeout=10,
        )
    assert not thief.cert_file.exists()


def test_the_claim_certificate_cannot_use_device_topics(broker, claim, tmp_path):
    """The claim section of the ACL is claim_policy_document: provisioning topics only."""
    text = acl.device_acl(broker.telemetry_rule, CLAIM_TEMPLATE)
    claim_section = text.split(f"user {acl.CLAIM_USER}")[1].split("user ")[0]
    assert "$aws/certificates/create-from-csr/#" in claim_section
    assert f"$aws/provisioning-templates/{CLAIM_TEMPLATE}/provision/#" in claim_section
    assert "dt/" not in claim_section and "jobs" not in claim_section
