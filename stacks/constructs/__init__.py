"""Reusable constructs: each owns one capability."""
