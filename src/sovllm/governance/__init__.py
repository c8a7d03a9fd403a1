"""Governance: identity, quotas and usage (audit, privacy and oversight follow in #5 and #6)."""
