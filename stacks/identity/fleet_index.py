"""IoT fleet indexing of the registry and connectivity status (account-wide: the owning stage).

It answers "which devices are connected now" with one GetStatistics query
(`fleetctl fleet status`) and "when was this device last seen" with one SearchIndex query
(`fleetctl device show`) at any fleet size, where the registry alone cannot.
https://docs.aws.amazon.com/iot/latest/developerguide/managing-fleet-index.html

CloudFormation's AWS::IoT::Index has only an IndexName property (no indexing modes), and CDK has
no construct for it, so the configuration is set with UpdateIndexingConfiguration at deploy time
and turned OFF (which deletes the index and stops its charges) when the stack is deleted.
https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-iot-index.html
https://docs.aws.amazon.com/iot/latest/apireference/API_UpdateIndexingConfiguration.html
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.sdk_call import sdk_call

# Registry fields (thing name, type, attributes, thingGroupNames) and connectivity status; no
# shadows, no Device Defender violations: nothing Fleetwarden queries, and each would add
# index updates (billed per 1 KB update, AWS IoT Device Management pricing).
THING_INDEXING = {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}
INDEXING_OFF = {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "OFF"}


def fleet_indexing(scope: Construct, *, prefix: str, defaults: PlatformDefaults) -> cr.AwsCustomResource:
    def update(configuration: dict) -> cr.AwsSdkCall:
        return cr.AwsSdkCall(
            service="Iot", action="updateIndexingConfiguration",
            parameters={"thingIndexingConfiguration": configuration},
            physical_resource_id=cr.PhysicalResourceId.of(f"{prefix}-fleet-indexing"))

    call = sdk_call(
        scope, "FleetIndexing",
        on_update=update(THING_INDEXING),
        on_delete=update(INDEXING_OFF),
        # The action configures the account's one thing index: "*" (resource-level permissions
        # for it are unverified in the Service Authorization Reference).
        statements=[iam.PolicyStatement(actions=["iot:UpdateIndexingConfiguration"], resources=["*"])],
        defaults=defaults,
        any_resource_reason="iot:UpdateIndexingConfiguration sets the account's fleet index configuration; "
                            "there is no narrower resource to name. The function runs only while "
                            "CloudFormation deploys the stack.",
    )
    return call
