from sovllm.cli.main import app

app()
