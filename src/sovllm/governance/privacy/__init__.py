"""Personal data: detection and masking (pii), content kept sealed per data subject (content),
erasure by crypto-shredding with a signed receipt (erasure)."""
