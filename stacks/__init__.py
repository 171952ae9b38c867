"""Fleetwarden CDK stacks."""
