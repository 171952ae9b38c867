"""The device data endpoint: MQTT over mutual TLS with X.509 client certificates only."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.sdk_call import sdk_call


class DeviceEndpoint(Construct):
    """An IoT Core domain configuration (endpoint type iot:Data-ATS).

    Devices reach it on port 8883 with their own certificate; nothing else is accepted:
    no WebSockets, no HTTPS, no custom authorisers, and only the configured TLS policy.
    The device and claim policies admit connections only through `host_name` (iot:DomainName),
    so the account's default endpoint refuses Fleetwarden certificates.

    Its host name is either the customer's own (`domain_name`, with an ACM server certificate:
    "Creating and configuring customer managed domains", https://docs.aws.amazon.com/iot/latest/
    developerguide/iot-custom-endpoints-configurable-custom.html) or the AWS-managed one that IoT
    Core assigns at creation (for example d01645582h24k4we2vblw-ats.iot.us-west-2.amazonaws.com,
    AWS CLI reference, describe-domain-configuration). CloudFormation does not return that name:
    AWS::IoT::DomainConfiguration's Fn::GetAtt attributes are Arn, DomainType and
    ServerCertificates only (CloudFormation template reference, AWS::IoT::DomainConfiguration),
    so a deploy-time DescribeDomainConfiguration call reads its `domainName` back
    (https://docs.aws.amazon.com/iot/latest/apireference/API_DescribeDomainConfiguration.html).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        tls_security_policy: str,
        defaults: PlatformDefaults,
        domain_name: str | None = None,
        certificate_arn: str | None = None,
        validation_certificate_arn: str | None = None,
    ) -> None:
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
            domain_name=domain_name,
            server_certificate_arns=[certificate_arn] if certificate_arn else None,
            validation_certificate_arn=validation_certificate_arn,
        )
        self.name = name
        self.host_name = domain_name or self._read_back_host_name(name, defaults)
        CfnOutput(self, "DeviceEndpointHost", key="DeviceEndpointHost", value=self.host_name,
                  description="Host name devices connect to (MQTT, port 8883); the account's "
                              "default endpoint refuses Fleetwarden certificates")
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

    def _read_back_host_name(self, name: str, defaults: PlatformDefaults) -> str:
        describe = cr.AwsSdkCall(
            service="Iot",
            action="describeDomainConfiguration",
            parameters={"domainConfigurationName": name},
            physical_resource_id=cr.PhysicalResourceId.of(f"{name}-host-name"),
            output_paths=["domainName"],  # the response also lists certificates; keep it small
        )
        call = sdk_call(
            self, "HostName",
            on_update=describe,
            on_delete=None,
            statements=[iam.PolicyStatement(
                actions=["iot:DescribeDomainConfiguration"],
                resources=[self.domain_configuration.attr_arn],
            )],
            defaults=defaults,
        )
        call.node.add_dependency(self.domain_configuration)
        return call.get_response_field("domainName")
