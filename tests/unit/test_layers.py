"""The layers are a contract (pyproject.toml, [tool.importlinter]): cli → serve → api/web →
gateway → governance/pool/observability → engines/store, imports downward only; api and web do
not import each other; the engine imports neither the settings file nor the pool."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(root / "src"), "PATH": str(LINT.parent)}
    return subprocess.run(
        [str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_source_keeps_its_layers() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """The check can fail: the same source with three wrong imports is refused, each named."""
    shutil.copytree(ROOT / "src" / "sovllm", tmp_path / "src" / "sovllm")
    wrong = {
        "engines/llamacpp/engine.py": "import sovllm.config",  # the engine reads no settings
        "api/me.py": "import sovllm.web.routes",  # api and web are independent
        "governance/quotas.py": "import sovllm.gateway.admit",  # upward
    }
    for path, line in wrong.items():
        module = tmp_path / "src" / "sovllm" / path
        module.write_text(module.read_text() + f"\n{line}  # noqa\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert "2 broken" in done.stdout, done.stdout
    assert "sovllm.engines.llamacpp.engine -> sovllm.config" in done.stdout
    assert "sovllm.api.me -> sovllm.web.routes" in done.stdout
    assert "sovllm.governance.quotas -> sovllm.gateway.admit" in done.stdout
