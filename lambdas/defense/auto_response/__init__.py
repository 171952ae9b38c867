"""Automatic containment of a device named in a violation (Device Defender or the built-in detector)."""
