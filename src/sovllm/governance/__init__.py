"""Governance: keys and roles, quotas and usage, the audit log, personal data, the stop switch
and the Art. 30 record."""
