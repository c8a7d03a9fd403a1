"""Print the report to PDF with a headless Chromium (the one the browser tests drive).

Chromium's own `--print-to-pdf` needs no Python driver: the command works wherever a
Chromium is installed, and nothing is fetched from the network (the HTML is self-contained).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class PdfError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """$SOVLLM_CHROMIUM, or the first Chromium on PATH."""
    given = os.environ.get("SOVLLM_CHROMIUM")
    if given:
        return given
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def print_pdf(html: Path, out: Path, chromium: str, timeout_s: float = 120) -> None:
    """`html` printed to `out`; PdfError with Chromium's own words when it fails."""
    with tempfile.TemporaryDirectory(prefix="sovllm-pdf-") as profile:
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",  # as root in a container the sandbox cannot start
            "--disable-gpu",
            "--no-first-run",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={out}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PdfError(f"{chromium} could not print the report: {exc}") from None
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PdfError(f"{chromium} exited {done.returncode} without a PDF: {said}")
