"""sovllm: a private, compliant ChatGPT-like service on your own hardware."""

__version__ = "0.1.0"
