"""YAML with comments: the manifests say which plan figure each number came from.

PyYAML drops comments, so the objects are built from plain dicts and lists whose values may be
`Noted(value, why)`, and this module writes them itself: block style, keys in the order they
were inserted (the object builders insert them in the conventional kubectl order), scalars
quoted as JSON strings where YAML could read them as something else. `plain()` strips the notes
for validation; the tests read every written file back with `yaml.safe_load_all` and compare.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# A plain scalar YAML 1.1 (PyYAML) or 1.2 would not read back as this same string.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:=+@-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


@dataclass(frozen=True)
class Noted:
    """A value and the comment written after it."""

    value: Any
    why: str


@dataclass(frozen=True)
class Document:
    """One object and the comment lines written above it."""

    obj: dict[str, Any]
    header: tuple[str, ...] = ()


def plain(value: Any) -> Any:
    """The value without its notes (what Kubernetes reads)."""
    if isinstance(value, Noted):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        # YAML 1.1 (PyYAML) reads 1e+20 as a string: its floats need a dot.
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not text.endswith(":"):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar in ASCII: JSON's escapes, and YAML's \\U for characters
    beyond the BMP (JSON's surrogate pairs are not joined by YAML readers)."""
    out = json.dumps(text, ensure_ascii=False)
    return "".join(c if ord(c) < 0x7F else _escape(ord(c)) for c in out)


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _comment(why: str) -> str:
    return "  # " + " ".join(why.split())


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            note = ""
            if isinstance(item, Noted):
                note, item = _comment(item.why), item.value
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{scalar(key)}:{note}")
                out.extend(_lines(item, indent + 2 if isinstance(item, dict) else indent))
            elif _literal(item):
                out.append(f"{pad}{scalar(key)}: |{note}")
                out.extend(f"{pad}  {line}" if line else "" for line in item.splitlines())
            else:
                out.append(f"{pad}{scalar(key)}: {_empty_or_scalar(item)}{note}")
        return out
    for item in value:
        note = ""
        if isinstance(item, Noted):
            note, item = _comment(item.why), item.value
        if isinstance(item, dict | list) and item:
            inner = _lines(item, indent + 2)
            first = inner[0][indent + 2 :]
            out.append(f"{pad}- {first}{note if not isinstance(item, dict) else ''}")
            out.extend(inner[1:])
            if note and isinstance(item, dict):
                out[-len(inner)] += note
        else:
            out.append(f"{pad}- {_empty_or_scalar(item)}{note}")
    return out


def _literal(value: Any) -> bool:
    """A multi-line text that a `|` block keeps byte for byte (a settings file in a
    ConfigMap): one final newline, no trailing blanks, no leading blank on the first line."""
    if not isinstance(value, str) or "\n" not in value.rstrip("\n"):
        return False
    lines = value.split("\n")
    return (
        value.endswith("\n")
        and not value.endswith("\n\n")
        and not value[0].isspace()
        and all(line == line.rstrip() and "\t" not in line for line in lines)
    )


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def dump(docs: list[Document]) -> str:
    """The documents as one YAML stream, `---` between them."""
    parts: list[str] = []
    for doc in docs:
        lines = [f"# {line}" if line else "#" for line in doc.header]
        lines.extend(_lines(doc.obj, 0))
        parts.append("\n".join(lines) + "\n")
    return "---\n".join(parts)
