"""The package version: one place, read by setup.py and recorded in provenance."""

__version__ = "0.1.0"
