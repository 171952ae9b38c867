"""AWS IoT fleet provisioning pre-provisioning hook: one-time tokens, one device per serial."""
