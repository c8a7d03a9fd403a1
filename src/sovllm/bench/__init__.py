"""Load testing: N simulated chat users against any OpenAI-compatible endpoint (issue #7)."""
