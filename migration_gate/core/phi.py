"""The application's PHI encryption format, reimplemented so the gate can read what the app wrote.

Format (target-app.md section 4): ``v1:<iv>:<tag>:<ct>``, AES-256-GCM, a 16-byte IV, a 16-byte tag, no AAD,
lowercase hex everywhere. Null, empty or whitespace-only plaintext is stored as NULL. Search hashes are an
unkeyed SHA-256 over ``lower(trim(plaintext))``.

Exceptions raised here never carry plaintext or ciphertext: callers put them in reports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from migration_gate.core.errors import MigrationGateError

V1_PATTERN = r"^v1:[0-9a-f]{32}:[0-9a-f]{32}:([0-9a-f]{2})+$"
_V1 = re.compile(V1_PATTERN)
_KEY = re.compile(r"^[0-9a-fA-F]{64}$")

# JavaScript's String.prototype.trim() whitespace set, so our hashes equal the app's.
_JS_WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u2028\u2029\u202f\u205f\u3000\ufeff"


class PhiKeyError(MigrationGateError, ValueError):
    """The configured key is missing or malformed (the app would refuse to start)."""


class CiphertextFormatError(MigrationGateError, ValueError):
    """A stored value is not ``v1:iv:tag:ct`` (plaintext, ``v2:``, truncated...)."""


class DecryptionError(MigrationGateError, ValueError):
    """Well-formed ciphertext that does not authenticate: wrong key or tampered data."""


def parse_key(key: str | None) -> bytes:
    """Return the 32-byte key from its 64-hex-character form, as the app requires."""
    if key is None or key == "":
        raise PhiKeyError("PHI_ENCRYPTION_KEY is not set")
    if len(key) != 64:
        raise PhiKeyError(f"PHI_ENCRYPTION_KEY must be 64 hex characters, got {len(key)} characters")
    if not _KEY.fullmatch(key):
        raise PhiKeyError("PHI_ENCRYPTION_KEY must be hexadecimal (64 characters of 0-9, a-f)")
    return bytes.fromhex(key)


def derived_key(phi_key: str | bytes, purpose: bytes) -> bytes:
    """A key for one purpose (the answers recordings' digests, the backup record's MAC), derived from the PHI key:
    HMAC-SHA256(PHI key, purpose). Whoever lacks the PHI key can neither compute nor forge what it keys; the PHI
    key itself never leaves this process."""
    raw = phi_key if isinstance(phi_key, bytes) else parse_key(phi_key)
    return hmac.new(raw, purpose, hashlib.sha256).digest()


def is_blank(value: str | None) -> bool:
    return value is None or value.strip(_JS_WHITESPACE) == ""


def is_v1(value: str) -> bool:
    """True when the value has the exact stored shape of v1 ciphertext: the whole value (a full match, so a
    trailing newline, which the app rejects, is not valid ciphertext)."""
    return _V1.fullmatch(value) is not None


def iv_of(value: str) -> str:
    """The IV part of a well-formed value (for IV-reuse checks)."""
    if not is_v1(value):
        raise CiphertextFormatError("value is not v1 ciphertext")
    return value[3:35]


class PhiCodec:
    """Encrypts and decrypts PHI values with one key, in the app's stored format."""

    def __init__(self, key: str | bytes, iv_source: Callable[[], bytes] | None = None) -> None:
        raw = key if isinstance(key, bytes) else parse_key(key)
        if len(raw) != 32:
            raise PhiKeyError("PHI key must be 32 bytes")
        self._raw = raw
        self._aead = AESGCM(raw)
        self._iv_source = iv_source or (lambda: os.urandom(16))

    def encrypt(self, plaintext: str | None, iv: bytes | None = None) -> str | None:
        """Encrypt; blank input gives None, as the app stores NULL for it."""
        if is_blank(plaintext):
            return None
        nonce = iv if iv is not None else self._iv_source()
        if len(nonce) != 16:
            raise ValueError("IV must be 16 bytes")
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return f"v1:{nonce.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"

    def aead(self) -> AESGCM:
        """The cipher itself, for loops that parse values their own (cheaper, equally exact) way."""
        return self._aead

    def worker_key(self) -> bytes:
        """The raw key, for a worker process's initializer only: never for a message, argv or the environment."""
        return self._raw

    def fingerprint(self) -> str:
        """A short one-way tag of the key (salted SHA-256), so a record made with one key is never trusted for
        another; it reveals nothing usable about the key."""
        return hashlib.sha256(b"migration-gate key fingerprint:" + self._raw).hexdigest()[:16]

    def decrypt(self, value: str | None) -> str | None:
        if is_blank(value):  # the app reads NULL, '' and whitespace-only values as null: not a fault
            return None
        if not is_v1(value):
            raise CiphertextFormatError("Invalid ciphertext format - expected v1:iv:authTag:encrypted")
        _, iv, tag, ct = value.split(":")
        try:
            plain = self._aead.decrypt(bytes.fromhex(iv), bytes.fromhex(ct) + bytes.fromhex(tag), None)
        except InvalidTag:
            raise DecryptionError("Wrong encryption key or corrupted data") from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted bytes are not UTF-8") from None


def search_hash(plaintext: str | None) -> str | None:
    """sha256(lower(trim(x))) as the app's createSearchHash; blank gives None."""
    if is_blank(plaintext):
        return None
    normalised = plaintext.lower().strip(_JS_WHITESPACE)
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()

