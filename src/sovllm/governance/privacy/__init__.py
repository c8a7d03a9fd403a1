"""Personal-data protection: detection and masking (issue #5; erasure and retention to come)."""
