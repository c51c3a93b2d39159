"""The PHI codec reads and writes exactly the app's v1 format; tampering and wrong keys are caught."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migration_gate.core.phi import (
    CiphertextFormatError,
    DecryptionError,
    PhiCodec,
    PhiKeyError,
    is_v1,
    parse_key,
    search_hash,
)

KEY = "11" * 32
OTHER_KEY = "22" * 32
codec = PhiCodec(KEY)
# Not blank once trimmed the way JavaScript trims: the app stores NULL for blank input.
plaintexts = st.text(min_size=1).filter(lambda s: s.strip(" \t\n\r\f\v\u00a0\ufeff\u2028\u2029\u3000") != "")


def test_reference_example_from_the_app_docs() -> None:
    """target-app.md section 4: key 32 x 0x11, IV 16 x 0xab, plaintext jane@example.com."""
    expected = ("v1:abababababababababababababababab:ff1949c7c6832cfd1de4bb9e48575d17:"
                "1006b2efbb48b7086e8a3590e0ae6127")
    assert codec.encrypt("jane@example.com", iv=b"\xab" * 16) == expected
    assert codec.decrypt(expected) == "jane@example.com"


def test_reference_search_hash() -> None:
    digest = "8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d"
    assert search_hash("  Jane@Example.COM ") == digest
    assert search_hash("jane@example.com") == digest


@given(plaintexts)
def test_round_trip(plaintext: str) -> None:
    assert codec.decrypt(codec.encrypt(plaintext)) == plaintext


@given(plaintexts)
def test_format_is_v1_with_ciphertext_twice_the_utf8_length(plaintext: str) -> None:
    value = codec.encrypt(plaintext)
    assert is_v1(value)
    assert len(value.split(":")[3]) == 2 * len(plaintext.encode("utf-8"))


@given(plaintexts, st.data())
def test_any_flipped_hex_digit_is_detected(plaintext: str, data: st.DataObject) -> None:
    value = codec.encrypt(plaintext)
    position = data.draw(st.integers(min_value=3, max_value=len(value) - 1).filter(lambda i: value[i] != ":"))
    replacement = data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != value[position]))
    tampered = value[:position] + replacement + value[position + 1:]
    with pytest.raises(DecryptionError):
        codec.decrypt(tampered)


@given(plaintexts)
def test_wrong_key_is_detected(plaintext: str) -> None:
    with pytest.raises(DecryptionError, match="Wrong encryption key"):
        PhiCodec(OTHER_KEY).decrypt(codec.encrypt(plaintext))


@pytest.mark.parametrize("blank", [None, "", "   ", "\t\n", "\u00a0"])
def test_blank_plaintext_is_stored_as_null(blank: str | None) -> None:
    assert codec.encrypt(blank) is None


@pytest.mark.parametrize("stored", ["jane@example.com", "v2:" + "ab" * 16 + ":" + "cd" * 16 + ":ef",
                                    "v1:ABABABABABABABABABABABABABABABAB:" + "cd" * 16 + ":ef",
                                    "v1:" + "ab" * 16 + ":" + "cd" * 16 + ":", "v1:" + "ab" * 16 + ":" + "cd" * 16])
def test_malformed_values_are_rejected_without_echoing_them(stored: str) -> None:
    with pytest.raises(CiphertextFormatError) as caught:
        codec.decrypt(stored)
    assert stored not in str(caught.value)


def _wrong_key_message(plaintext: str) -> str:
    with pytest.raises(DecryptionError) as caught:
        PhiCodec(OTHER_KEY).decrypt(codec.encrypt(plaintext))
    return str(caught.value)


@given(plaintexts)
def test_errors_never_carry_the_plaintext(plaintext: str) -> None:
    """The wrong-key error is the same words whatever was encrypted: nothing of the value (or its ciphertext) is
    in it. (Asserting only `plaintext not in message` failed for a plaintext that is a word of the message.)"""
    value = codec.encrypt(plaintext)
    with pytest.raises(DecryptionError) as caught:
        PhiCodec(OTHER_KEY).decrypt(value)
    assert value not in str(caught.value)
    assert str(caught.value) == _wrong_key_message("a reference value")


@pytest.mark.parametrize("key, message", [
    (None, "not set"), ("", "not set"), ("ab" * 31 + "a", "got 63"), ("zz" * 32, "hexadecimal"),
    ("test-key-64-characters-long-for-testing-purposes-only", "got 53"),
])
def test_bad_keys_are_refused_without_echoing_them(key: str | None, message: str) -> None:
    with pytest.raises(PhiKeyError, match=message) as caught:
        parse_key(key)
    if key:
        assert key not in str(caught.value)
