"""Admin API: issue one-time provisioning tokens (POST /provisioning-tokens)."""
