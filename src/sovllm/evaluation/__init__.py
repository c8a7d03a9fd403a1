"""`sovllm eval`: small bundled suites run against the served model through its API (AI Act
Art. 15: accuracy, robustness and cybersecurity, measured and declared). suites.py reads a
suite, scoring.py judges one answer, runner.py asks the model and scores each check."""
