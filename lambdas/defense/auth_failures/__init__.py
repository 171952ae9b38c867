"""Authorization-failure detector: counts IoT Core AUTHORIZATION_FAILURE log lines per client and window."""
