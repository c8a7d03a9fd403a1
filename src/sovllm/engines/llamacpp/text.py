"""Turning sampled tokens into text: whole UTF-8 characters only, and stop strings held back."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Stream:
    """Bytes in, complete characters out. A character split across tokens waits for its rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """At the end of the answer: the start of a character whose rest never came (max_tokens
        cut it) is dropped, as vLLM's detokenizer drops it, not sent as U+FFFD."""
        self._decoder.reset()
        return ""


class StopMatcher:
    """Finds stop strings in streamed text without ever emitting part of one.

    Text that could still grow into a stop string is held back until it cannot.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Return the text that is safe to emit; set `stopped` once a stop string appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The held-back text, once generation has ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buf: str) -> int:
        # The longest suffix of buf that is a proper prefix of some stop string.
        for n in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self._stops):
                return n
        return 0
