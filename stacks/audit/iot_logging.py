"""IoT Core logging (an account-wide setting: the owning stage sets it)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iot_alpha as iot
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.nag import acknowledge_role_policy

# IoT Core writes its logs to this fixed log group name; creating it first gives it
# retention and encryption instead of the never-expiring default.
IOT_LOG_GROUP_NAME = "AWSIotLogsV2"


def iot_logging(scope: Construct, *, level: str, defaults: PlatformDefaults) -> iot.Logging:
    defaults.log_group(scope, "IotCoreLogGroup", name=IOT_LOG_GROUP_NAME)
    logging = iot.Logging(scope, "IotCoreLogging", log_level=iot.LogLevel[level])
    role = logging.node.find_child("Role")
    acknowledge_role_policy(role, "IoT Core writing its logs")
    Validations.of(role).acknowledge(Acknowledgment(
        id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>"
           f":log-group:{IOT_LOG_GROUP_NAME}:*]",
        reason="IoT Core creates one log stream per client inside the single AWSIotLogsV2 "
               "group; stream names cannot be known in advance.",
    ))
    return logging
