"""Personal-data detection and masking, validated by checksum wherever the format has one.

A pattern alone finds too much (every 16-digit number is not a card): each candidate is kept
only if its check digits verify (Luhn, ISO 7064 mod 97, the national algorithms), so masking
does not shred ordinary numbers and the counts in the audit log mean something.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Validator = Callable[[str], bool]


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def luhn(number: str) -> bool:
    digits = [int(c) for c in _digits(number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban(value: str) -> bool:
    s = re.sub(r"\s", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


# What a character in an odd position counts (a digit counts as the letter at its index).
_CF_ODD = [
    *(1, 0, 5, 7, 9, 13, 15, 17, 19, 21),  # A-J, and 0-9
    *(2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23),  # K-Z
]


def codice_fiscale(value: str) -> bool:
    """Italian tax code: 15 characters and a check letter (DM 23/12/1976)."""
    s = value.upper()
    if not re.fullmatch(
        r"[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]", s
    ):
        return False
    total = 0
    for i, c in enumerate(s[:15]):
        n = int(c) if c.isdigit() else ord(c) - ord("A")
        total += _CF_ODD[n] if i % 2 == 0 else n
    return chr(ord("A") + total % 26) == s[15]


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_nie(value: str) -> bool:
    """Spanish DNI (8 digits + letter) and NIE (X/Y/Z + 7 digits + letter): mod 23."""
    s = value.upper()
    m = re.fullmatch(r"([XYZ]?)(\d{7,8})([A-Z])", s)
    if not m:
        return False
    prefix, digits, letter = m.groups()
    if prefix:
        if len(digits) != 7:
            return False
        digits = str("XYZ".index(prefix)) + digits
    elif len(digits) != 8:
        return False
    return _DNI_LETTERS[int(digits) % 23] == letter


def bsn(value: str) -> bool:
    """Dutch citizen service number: the 11-test."""
    d = _digits(value)
    if len(d) != 9 or d == "000000000":
        return False
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1), strict=True)) - int(d[8])
    return total % 11 == 0


def pesel(value: str) -> bool:
    """Polish national identification number."""
    d = _digits(value)
    if len(d) != 11:
        return False
    weights = [1, 3, 7, 9, 1, 3, 7, 9, 1, 3]
    check = (10 - sum(int(c) * w for c, w in zip(d[:10], weights, strict=True)) % 10) % 10
    return check == int(d[10])


def nif_pt(value: str) -> bool:
    """Portuguese tax number: mod 11."""
    d = _digits(value)
    if len(d) != 9 or d[0] not in "123568":
        return False
    total = sum(int(c) * w for c, w in zip(d[:8], range(9, 1, -1), strict=True))
    check = 11 - total % 11
    return (0 if check >= 10 else check) == int(d[8])


def ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# kind -> (pattern, validator). Order matters: earlier kinds claim their spans first.
# A phone number has no check digit, so its shapes are narrow: international (+), national
# with a trunk 0 written in groups (most of Europe; a bare run of digits is as often an order
# or file number), North American with its fixed grouping, and any other run of digits only
# after a word that says it is a phone number (Italian mobiles start with 3, Spanish numbers
# have no trunk prefix). Where a pattern has a `value` group, only that is the finding (the
# context word stays).
_PHONE_WORD = (
    r"(?i:\b(?:tel|tél|phone|telephone|téléphone|telefon\w*|teléfono|cell\w*|mobil\w*|móvil|"
    r"movil|gsm|fax|whatsapp)\b\.?(?:\s*(?:n[or°º]?\.?|nr\.?|number|numero|nummer))?"
    r"\s*[:.]?\s*)"
)
_PHONE = re.compile(
    rf"(?P<ctx>{_PHONE_WORD})?(?<![\w+/])(?P<value>"
    r"\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}"
    r"|0\d{1,4}(?:[ .-]\d{2,8}){1,4}"
    r"|0\d{2,4}/\d{5,8}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4}"
    r"|(?(ctx)\d(?:[ .-]?\d){7,14}|(?!))"
    r")(?![\w/])"
)


def phone(value: str) -> bool:
    """As many digits as a phone number has: 8 to 15 in international form (E.164, after + or
    00), 9 to 12 otherwise, in groups set apart by one kind of separator (08.30-12.30 14.30 is
    opening hours, 2024-01-15 10 a date and a time)."""
    digits = len(_digits(value))
    if value.startswith("+"):
        return 8 <= digits <= 15
    if value.startswith("00"):
        return 8 <= digits - 2 <= 15 and value[2:3] != "0"  # country codes do not start with 0
    if not value.startswith("(") and len(set(re.findall(r"\D", value))) > 1:
        return False
    return 9 <= digits <= 12


DETECTORS: dict[str, tuple[re.Pattern[str], Validator]] = {
    "email": (
        # Starts only where the local part starts: from inside a long run of its characters,
        # each start would rescan the run, quadratic in the text ("1-" * 50,000: 14 s).
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
        lambda s: True,
    ),
    # Any case: the check digits (mod 97) decide, and `iban` upper-cases first.
    "iban": (
        re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?\b"),
        iban,
    ),
    "payment_card": (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), luhn),
    "codice_fiscale": (
        re.compile(
            r"\b[A-Za-z]{6}[0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z]"
            r"[0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z][0-9LMNPQRSTUVlmnpqrstuv]{3}"
            r"[A-Za-z]\b"
        ),
        codice_fiscale,
    ),
    "es_dni_nie": (re.compile(r"\b[XYZxyz]?\d{7,8}[A-Za-z]\b"), dni_nie),
    "pl_pesel": (re.compile(r"\b\d{11}\b"), pesel),
    "nl_bsn": (re.compile(r"\b\d{9}\b"), bsn),
    "pt_nif": (re.compile(r"\b\d{9}\b"), nif_pt),
    "ipv4": (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), ip_address),
    "ipv6": (
        re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
        ip_address,
    ),
    "phone": (_PHONE, phone),
}


ExtraDetector = Callable[[str], list[Finding]]
_extra: dict[str, ExtraDetector] = {}
"""Detectors added at start-up (privacy.detectors, privacy.presidio), by name."""


class DetectionError(Exception):
    """A detector raised. The message names the detector and the exception's type, never the
    exception's own message: it may quote the text being checked."""

    def __init__(self, detector: str, exc: BaseException) -> None:
        super().__init__(f"personal-data detector {detector!r} raised {type(exc).__name__}")
        self.detector = detector


def describe_failure(exc: BaseException) -> str:
    """What may be logged of a failed detection: never an exception's own message."""
    return str(exc) if isinstance(exc, DetectionError) else type(exc).__name__


class DetectorSpecError(Exception):
    pass


def register(name: str, detector: ExtraDetector) -> None:
    """Add a detector run after the built-in ones (a second one of the same name replaces it)."""
    _extra[name] = detector


def load_detector(spec: str) -> None:
    """Register `module:function`, a callable that takes the text and returns `Finding`s."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DetectorSpecError(f"{spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure of the module's own code at import
        raise DetectorSpecError(
            f"cannot import {module_name!r} for {spec!r}: {type(exc).__name__}: {exc}"
        ) from None
    detector = getattr(module, attr, None)
    if not callable(detector):
        raise DetectorSpecError(f"{spec!r}: module {module_name!r} has no function {attr!r}")
    register(spec, detector)


def use_presidio() -> None:
    """Add Microsoft Presidio's recognizers (the `sovllm[presidio]` extra) to detection.

    Presidio's analyzer wants a spaCy model, which would have to be downloaded: it runs here over
    a blank English pipeline instead, so its pattern recognizers (with their own checksums) work
    and its NER-based ones find nothing. Its URL recognizer is removed: it fetches the Public
    Suffix List from the internet on first use.
    """
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class _BlankEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    engine = _BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    analyzer.registry.remove_recognizer("UrlRecognizer")

    def presidio(text: str) -> list[Finding]:
        results = analyzer.analyze(text=text, language="en", score_threshold=0.5)
        return [Finding(f"presidio_{r.entity_type.lower()}", r.start, r.end) for r in results]

    register("presidio", presidio)


def detect(text: str) -> list[Finding]:
    """Validated findings, without overlaps, in text order.

    Raises DetectionError if any detector fails: callers fail closed (refuse, or keep nothing).
    """
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for kind, (pattern, valid) in DETECTORS.items():
        try:
            for m in pattern.finditer(text):
                group = "value" if "value" in pattern.groupindex else 0
                start, end = m.span(group)
                if any(s < end and start < e for s, e in taken):
                    continue
                if valid(m.group(group)):
                    taken.append((start, end))
                    found.append(Finding(kind, start, end))
        except Exception as exc:
            raise DetectionError(kind, exc) from None
    for name, extra in list(_extra.items()):  # the built-in detectors keep the spans they claimed
        try:
            findings = extra(text)
        except Exception as exc:
            raise DetectionError(name, exc) from None
        for f in findings:
            if not any(s < f.end and f.start < e for s, e in taken):
                taken.append((f.start, f.end))
                found.append(f)
    return sorted(found, key=lambda f: f.start)


def mask(text: str) -> tuple[str, Counter[str]]:
    """The text with each finding replaced by `[KIND]`, and the count of findings per kind."""
    findings = detect(text)
    out, last = [], 0
    for f in findings:
        out.append(text[last : f.start])
        out.append(f"[{f.kind.upper()}]")
        last = f.end
    out.append(text[last:])
    return "".join(out), Counter(f.kind for f in findings)
