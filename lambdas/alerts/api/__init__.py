"""Analyst API: list a thing's alerts (GET /alerts), fetch one alert's stored object through a
short-lived presigned S3 URL (GET /alerts/{id}/trace)."""
