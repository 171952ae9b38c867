"""The device data endpoint: MQTT over mutual TLS with X.509 client certificates only."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_iot as iot
from constructs import Construct


class DeviceEndpoint(Construct):
    """An AWS-managed IoT Core domain configuration (endpoint type iot:Data-ATS).

    Devices reach it on port 8883 with their own certificate; nothing else is accepted:
    no WebSockets, no HTTPS, no custom authorisers, and only the configured TLS policy.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name: str, tls_security_policy: str) -> None:
        super().__init__(scope, construct_id)
        self.domain_configuration = iot.CfnDomainConfiguration(
            self,
            "DomainConfiguration",
            domain_configuration_name=name,
            domain_configuration_status="ENABLED",
            service_type="DATA",
            application_protocol="SECURE_MQTT",
            authentication_type="AWS_X509",
            tls_config=iot.CfnDomainConfiguration.TlsConfigProperty(security_policy=tls_security_policy),
        )
        self.name = name
        CfnOutput(
            self,
            "DomainConfigurationName",
            value=name,
            description="Device endpoint domain configuration. Host name: aws iot "
            f"describe-domain-configuration --domain-configuration-name {name} --query domainName",
        )
        CfnOutput(self, "DomainConfigurationArn", value=self.domain_configuration.attr_arn,
                  description="ARN of the device endpoint domain configuration")
        CfnOutput(self, "TlsSecurityPolicy", value=tls_security_policy,
                  description="TLS security policy devices must negotiate")
