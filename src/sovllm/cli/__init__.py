"""The `sovllm` command line: one module per group of commands, their shared helpers in common."""
