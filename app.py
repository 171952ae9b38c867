#!/usr/bin/env python3
"""Fleetwarden CDK app: `cdk synth -c stage=dev|prod`. Config comes from cdk.json context."""

import sys

import aws_cdk as cdk

from stacks.config import ConfigError, load_config
from stacks.fleet_app import build_fleet


def main() -> int:
    app = cdk.App()
    try:
        config = load_config({
            "stage": app.node.try_get_context("stage"),
            "fleetwarden": app.node.try_get_context("fleetwarden"),
        })
    except ConfigError as err:
        print(f"fleetwarden: configuration error: {err}", file=sys.stderr)
        return 2
    build_fleet(app, config)
    try:
        app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        report = str(err).removeprefix("ValidationFailed: ")
        print(report, file=sys.stderr)
        print("fleetwarden: security checks failed: every cdk-nag finding above must be fixed "
              "or acknowledged next to its resource with a reason.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
