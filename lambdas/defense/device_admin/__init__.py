"""Operator actions on one device (quarantine, reinstate): explicit, validated and audited."""
