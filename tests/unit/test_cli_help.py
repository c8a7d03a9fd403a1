"""Every command's --help shows its options' help as written: Rich reads "[word]" as a style
tag and would drop a default written in brackets ("[the server's stop_mode]")."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from sovllm.cli.main import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(group, "commands", {}).items():  # a group's sub-commands
        found += _commands(sub, (*path, name))
    return found


def _flat(text: str) -> str:
    """The help as words: Rich's boxes and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_bracketed_defaults_survive_in_every_help() -> None:
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path in _commands(root):
        command: Any = root
        for name in path:
            command = command.commands[name]
        bracketed = [
            seg
            for param in command.params
            for seg in re.findall(r"\[[^\]]+\]", getattr(param, "help", None) or "")
        ]
        if not bracketed:
            continue
        shown = _flat(runner.invoke(app, [*path, "--help"], terminal_width=200).output)
        for seg in bracketed:
            # The source escapes it for Rich ("\\["); the reader sees the bracket.
            assert _flat(seg.replace("\\[", "[")) in shown, (path, seg)
            checked += 1
    assert checked >= 10  # stop --mode, plan size --gpus, eval --url, ...
