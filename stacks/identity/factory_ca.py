"""Manufacturing: the factory's CA registered with IoT Core, and just-in-time provisioning
that turns a device certificate's first connection into a registered, active device."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.identity.device_registry import DeviceRegistry
from stacks.identity.provisioning_templates import jitp_template


class FactoryCa(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        ca_certificate_pem: str,
        verification_certificate_pem: str | None,
        registry: DeviceRegistry,
        provisioning_role: iam.IRole,
    ) -> None:
        super().__init__(scope, construct_id)
        # DEFAULT mode proves possession of the CA key with a verification certificate (CN =
        # the account's registration code, `fleetctl ca verification-cert`). Without one, the
        # CA is registered in SNI_ONLY mode, which needs no proof but requires devices to send SNI.
        self.ca_certificate = iot.CfnCACertificate(
            self,
            "CaCertificate",
            ca_certificate_pem=ca_certificate_pem,
            status="ACTIVE",
            auto_registration_status="ENABLE",
            certificate_mode="DEFAULT" if verification_certificate_pem else "SNI_ONLY",
            verification_certificate_pem=verification_certificate_pem,
            registration_config=iot.CfnCACertificate.RegistrationConfigProperty(
                role_arn=provisioning_role.role_arn,
                template_body=jitp_template(
                    thing_type=registry.thing_type.thing_type_name,
                    fleet_group=registry.fleet_group.thing_group_name,
                    device_policy=registry.device_policy.policy_name,
                ),
            ),
        )
        CfnOutput(self, "CaCertificateId", value=self.ca_certificate.attr_id,
                  description="Registered factory CA; devices it signs are provisioned on first connect")
