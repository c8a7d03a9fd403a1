"""Detectors find valid identifiers, ignore look-alikes that fail their checksum, and mask."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovllm.governance.privacy.pii import DETECTORS, Finding, detect, mask

VALID = {
    "email": "mario.rossi@example.com",
    "iban": "DE89 3704 0044 0532 0130 00",
    "payment_card": "4111 1111 1111 1111",
    "codice_fiscale": "RSSMRA85T10A562S",
    "es_dni_nie": "12345678Z",
    "pl_pesel": "44051401359",
    "nl_bsn": "111222333",
    "pt_nif": "123456789",
    "ipv4": "192.168.1.20",
    "ipv6": "2001:db8::1",
    "phone": "+39 06 1234 5678",
}

# The same shapes with a wrong check digit: not personal data by their own rules.
INVALID = {
    "iban": "DE88 3704 0044 0532 0130 00",
    "payment_card": "4111 1111 1111 1112",
    "codice_fiscale": "RSSMRA85T10A562T",
    "es_dni_nie": "12345678A",
    "pl_pesel": "44051401358",
    "ipv4": "999.168.1.20",
}


@pytest.mark.parametrize(("kind", "value"), sorted(VALID.items()))
def test_each_valid_identifier_is_found_and_masked(kind: str, value: str) -> None:
    text = f"Patient file: {value}, see attached."
    masked, counts = mask(text)
    assert counts == {kind: 1}, counts
    assert value not in masked and f"[{kind.upper()}]" in masked
    assert masked.startswith("Patient file: ") and masked.endswith(", see attached.")


@pytest.mark.parametrize(("kind", "value"), sorted(INVALID.items()))
def test_a_wrong_check_digit_is_not_personal_data(kind: str, value: str) -> None:
    assert kind not in {f.kind for f in detect(f"ref {value} end")}


def test_more_formats() -> None:
    text = (
        "Card 5500-0000-0000-0004, IBAN GB82WEST12345698765432, "
        "NIE X1234567L, call +1 (555) 123-4567 or write to a.b@c.eu"
    )
    _, counts = mask(text)
    assert counts == {"payment_card": 1, "iban": 1, "es_dni_nie": 1, "phone": 1, "email": 1}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # National numbers with a trunk 0 (IT, NL, DE, FR, UK), North American ones, and any
        # number after a word that says it is one (an Italian mobile, a Spanish number).
        ("06 49911234", "[PHONE]"),
        ("Tel 0612345678", "Tel [PHONE]"),
        ("030 1234567", "[PHONE]"),
        ("01.23.45.67.89", "[PHONE]"),
        ("030/12345678", "[PHONE]"),
        ("01 23 45 67 89", "[PHONE]"),
        ("020 7946 0958", "[PHONE]"),
        ("(555) 123-4567", "[PHONE]"),
        ("555-123-4567", "[PHONE]"),
        ("Tel. 333 1234567", "Tel. [PHONE]"),
        ("cellulare: 333 123 4567", "cellulare: [PHONE]"),
        ("móvil 612 345 678", "móvil [PHONE]"),
        ("phone number: 0039 333 1234567", "phone number: [PHONE]"),
        ("Tel: +39 06 1234 5678", "Tel: [PHONE]"),
        # Numbers that are not phone numbers, with or without such a word.
        ("on 01/02/2024 12:30", "on 01/02/2024 12:30"),
        ("333 1234567", "333 1234567"),
        ("telephone 555 0100", "telephone 555 0100"),
        ("invoice 2024-000123", "invoice 2024-000123"),
        ("ISBN 978-3-16-148410-0", "ISBN 978-3-16-148410-0"),
        ("pulse 080-100", "pulse 080-100"),
        # A bare run of digits is as often an order or file number; court and file numbers
        # with a year; opening hours; a date and time after a context word.
        ("0612345678", "0612345678"),
        ("Invoice no. 0012345678", "Invoice no. 0012345678"),
        ("ISBN 0306406152", "ISBN 0306406152"),
        ("N. 01234/2019 REG.RIC.", "N. 01234/2019 REG.RIC."),
        ("Protocollo n. 0045678/2023", "Protocollo n. 0045678/2023"),
        ("Aktenzeichen 0123 4567/24", "Aktenzeichen 0123 4567/24"),
        ("08.30-12.30 14.30-18.00", "08.30-12.30 14.30-18.00"),
        ("fax 2024-01-15 10:30", "fax 2024-01-15 10:30"),
    ],
)
def test_phone_numbers_in_national_formats(text: str, masked: str) -> None:
    assert mask(text)[0] == masked


def test_an_email_match_starts_only_where_its_local_part_starts() -> None:
    """What keeps masking linear: a match may not begin inside a run of local-part characters,
    so a long run ("1-" * 50,000, 14 s before) is scanned from its start only, not from each
    of its characters. The whole address is still the finding."""
    pattern = DETECTORS["email"][0]
    assert [m.group() for m in pattern.finditer("write -john.doe@example.com now")] == [
        "-john.doe@example.com"
    ]
    assert pattern.match("1-1-1@x.eu", 1) is None  # from inside the run: no attempt succeeds


def test_an_iban_in_lower_case_is_found_by_its_check_digits() -> None:
    assert mask("iban nl91abna0417164300 please") == ("iban [IBAN] please", {"iban": 1})
    assert mask("iban nl92abna0417164300 please")[1] == {}


def test_ordinary_text_and_numbers_are_left_alone() -> None:
    text = "In 2024 we treated 1,250 patients; room 12, floor 3, version 1.2.3, cost 49.90 EUR."
    assert mask(text) == (text, {})


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_masking_never_raises_and_is_idempotent(text: str) -> None:
    masked, _ = mask(text)
    # Masks are not themselves personal data; masking twice changes nothing more.
    assert mask(masked)[0] == masked


def test_presidio_adds_its_recognizers_without_touching_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from sovllm.governance.privacy import pii

    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    wallet = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"  # a valid Bitcoin address (checksummed)
    text = f"Pay to {wallet}, see https://example.org/x, or mail a.b@example.com"
    assert "presidio_crypto" not in mask(text)[1]
    monkeypatch.setattr(pii, "_extra", {})
    pii.use_presidio()
    masked, counts = mask(text)
    assert counts["presidio_crypto"] == 1 and wallet not in masked
    assert counts["email"] == 1  # the built-in detector keeps its span
    assert attempts == []


def _raises_quoting(text: str) -> list[Finding]:
    raise ValueError(f"cannot parse {text}")


def test_a_failing_detector_fails_detection_and_its_message_keeps_the_text_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sovllm.governance.privacy import pii

    monkeypatch.setattr(pii, "_extra", {})
    pii.register("quoting", _raises_quoting)
    with pytest.raises(pii.DetectionError) as err:
        mask("Mario Rossi lives here")
    assert str(err.value) == "personal-data detector 'quoting' raised ValueError"
    assert err.value.__suppress_context__  # a logged traceback does not show the original


def test_detectors_load_from_module_function_specs_or_say_why_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sovllm.governance.privacy import pii

    monkeypatch.setattr(pii, "_extra", {})
    (tmp_path / "staff_ids.py").write_text(
        "import re\nfrom sovllm.governance.privacy.pii import Finding\n"
        "def detect(text):\n"
        "    return [Finding('staff_id', m.start(), m.end())"
        " for m in re.finditer(r'EMP-\\d{6}', text)]\n"
        "value = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pii.load_detector("staff_ids:detect")
    assert mask("ask EMP-123456 about it") == ("ask [STAFF_ID] about it", Counter(staff_id=1))
    for spec, why in (
        ("staff_ids", "not of the form module:function"),
        ("no_such_module_here:detect", "cannot import 'no_such_module_here'"),
        ("staff_ids:missing", "has no function 'missing'"),
        ("staff_ids:value", "has no function 'value'"),
    ):
        with pytest.raises(pii.DetectorSpecError, match=why):
            pii.load_detector(spec)


def test_serve_names_a_detector_it_cannot_load(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SOVLLM_DATA_DIR": str(tmp_path),
        "SOVLLM_PRIVACY__DETECTORS": '["no_such_module_here:detect"]',
    }
    out = subprocess.run(
        [sys.executable, "-m", "sovllm", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert "privacy.detectors" in out.stderr and "no_such_module_here" in out.stderr
    assert "Traceback" not in out.stderr
