"""Prompt text of exact token lengths, generated offline.

The text is a random sequence of common English words, each a single token with its leading
space in the BPE vocabularies of SmolLM2, GPT-2 and Llama (checked for SmolLM2 against its
GGUF vocabulary). A prompt's token count is then `overhead + slope * words`, where the overhead
is the chat template's. Both are measured on the target itself, through its tokenizer when it
has a `/tokenize` route and otherwise from `usage.prompt_tokens` of tiny requests, so the
lengths are exact on any server whose tokenizer keeps these words whole, and are checked
against `usage` for every request either way.

Every prompt starts with different random words, so no two share a prefix beyond the template
and a prefix cache cannot flatter the results.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Messages = list[dict[str, str]]
TokenCounter = Callable[[Messages], Awaitable[int]]

CALIBRATION_WORDS = (8, 32, 96)

_WORD_TEXT = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art history "
    "party result change morning reason research girl guy moment air teacher force education "
    "river garden window paper music table market light letter field voice plan road color "
    "stone tree animal bird horse rain snow wind summer winter spring fall ocean island "
    "forest mountain village doctor nurse patient hospital court judge report record data "
    "model plant energy price cost value risk rule order page note list open close make take "
    "give find tell ask seem feel try leave call keep let begin show hear play run move live "
    "believe hold bring happen write provide sit stand lose pay meet include continue set "
    "learn lead understand watch follow stop create speak read allow add spend grow offer "
    "remember love consider appear buy wait serve send expect build stay cut reach remain "
    "suggest raise pass sell require decide pull good new first last long great little own "
    "other old big high different small large next early young important few public same able "
    "clear simple quiet green blue red black white strong free full short"
)
WORDS = tuple(_WORD_TEXT.split())


# At the start of a message a word has no leading space, and these then split in two.
_SPLIT_TEXT = (
    "morning guy garden island mountain village nurse judge seem hear believe bring happen "
    "provide lose meet speak spend appear serve remain decide"
)
_SPLIT_AT_START = frozenset(_SPLIT_TEXT.split())
FIRST_WORDS = tuple(w for w in WORDS if w not in _SPLIT_AT_START)


def words_text(rng: random.Random, n: int) -> str:
    first = rng.choice(FIRST_WORDS)
    return " ".join([first, *(rng.choice(WORDS) for _ in range(max(1, n) - 1))])


@dataclass(frozen=True)
class Calibration:
    """tokens(prompt of w words in one user message) = overhead + slope * w."""

    overhead: float
    slope: float
    method: str
    points: tuple[tuple[int, int], ...]

    @property
    def exact(self) -> bool:
        """True when every calibration point lies on the line with integer slope 1."""
        return self.slope == 1.0 and all(t == self.overhead + w for w, t in self.points)

    def words_for(self, tokens: int) -> int:
        """Words of one user message such that the first turn's prompt has `tokens` tokens."""
        return max(1, round((tokens - self.overhead) / self.slope))

    def message_words(self, tokens: int) -> int:
        """Words of a follow-up message that adds about `tokens` tokens of content."""
        return max(1, round(tokens / self.slope))

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "template_overhead_tokens": self.overhead,
            "tokens_per_word": self.slope,
            "exact": self.exact,
            "points": [{"words": w, "tokens": t} for w, t in self.points],
        }


def fit(points: list[tuple[int, int]], method: str) -> Calibration:
    """Least-squares line through (words, tokens); exact points give slope 1 and an int."""
    n = len(points)
    mx = sum(w for w, _ in points) / n
    my = sum(t for _, t in points) / n
    sxx = sum((w - mx) ** 2 for w, _ in points)
    slope = sum((w - mx) * (t - my) for w, t in points) / sxx if sxx else 1.0
    slope = slope if slope > 0 else 1.0
    overhead = my - slope * mx
    if abs(slope - 1.0) < 1e-9 and abs(overhead - round(overhead)) < 1e-9:
        slope, overhead = 1.0, float(round(overhead))
    return Calibration(overhead, slope, method, tuple(points))


async def calibrate(count: TokenCounter, method: str, seed: int) -> Calibration:
    rng = random.Random(seed ^ 0x5EED)
    points = []
    for words in CALIBRATION_WORDS:
        tokens = await count([{"role": "user", "content": words_text(rng, words)}])
        points.append((words, tokens))
    return fit(points, method)
