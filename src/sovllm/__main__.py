from sovllm.cli import app

app()
