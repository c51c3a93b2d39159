"""Who can open a backup: the age recipients it is encrypted to ([backup] recipients, GATE_BACKUP_RECIPIENTS) and
the identities a restore decrypts with (GATE_BACKUP_IDENTITY only: the private key never sits in a file the gate
reads from its configuration). At rest a dump is an age file (age-encryption.org/v1, opened by `age -d -i KEY`
without this tool).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyrage
from pyrage import x25519

from migration_gate.backup.record import PHI_KEY_ENV, BackupError, environment_record_key, record_key
from migration_gate.config import BackupConfig
from migration_gate.config.environment import variables

IDENTITY_ENV = "GATE_BACKUP_IDENTITY"  # an age identity file's path, or the AGE-SECRET-KEY-1... itself
RECIPIENTS_ENV = "GATE_BACKUP_RECIPIENTS"  # extra age public keys (the sandbox's own), comma or space separated


@dataclass(frozen=True)
class BackupKeys:
    """Who can open a backup: the age recipients (public keys) it is encrypted to, and the identities (private
    keys, from the environment only) a restore decrypts with. encrypt "none" writes a plaintext dump."""

    encrypt: str = "age"
    recipients: tuple[str, ...] = ()
    identities: tuple[str, ...] = field(default=(), repr=False)
    # the record's MAC key (record_key): from PHI_ENCRYPTION_KEY unless given; None only without a PHI key
    record_key: bytes | None = field(default_factory=environment_record_key, repr=False)

    @classmethod
    def generate(cls) -> BackupKeys:
        """A fresh key pair held only in memory: for a dump that lives minutes (PRE-08's copy, the sandbox)."""
        identity = x25519.Identity.generate()
        return cls(recipients=(str(identity.to_public()),), identities=(str(identity),))

    @classmethod
    def from_environment(cls, settings: BackupConfig | None = None, env: Mapping[str, str] | None = None,
                         phi_key: str | None = None) -> BackupKeys:
        """[backup] recipients plus GATE_BACKUP_RECIPIENTS; the identity from GATE_BACKUP_IDENTITY; the record's
        MAC key from phi_key (the gate's target key), else the environment's PHI_ENCRYPTION_KEY."""
        settings = settings or BackupConfig()
        env = variables() if env is None else env
        extra = tuple(r for r in re.split(r"[\s,]+", env.get(RECIPIENTS_ENV, "")) if r)
        return cls(encrypt=settings.encrypt, recipients=tuple(dict.fromkeys(settings.recipients + extra)),
                   identities=_read_identities(env.get(IDENTITY_ENV, "")),
                   record_key=record_key(phi_key or env.get(PHI_KEY_ENV)))

    @property
    def encrypting(self) -> bool:
        return self.encrypt != "none"

    def age_recipients(self) -> list[x25519.Recipient]:
        if not self.recipients:
            raise BackupError("the backup is to be encrypted (age) but names no recipient: put the public keys in "
                              f"[backup] recipients (or {RECIPIENTS_ENV}), or set [backup] encrypt = \"none\"")
        found = []
        for i, text in enumerate(self.recipients):
            try:
                found.append(x25519.Recipient.from_str(text))
            except pyrage.RecipientError:
                raise BackupError(f"backup recipient {i + 1} is not a valid age public key (age1...)") from None
        return found

    def age_identities(self, what: str) -> list[x25519.Identity]:
        if not self.identities:
            raise BackupError(f"{what} is age-encrypted: set {IDENTITY_ENV} to the identity file that opens it")
        found = []
        for text in self.identities:
            try:
                found.append(x25519.Identity.from_str(text))
            except pyrage.IdentityError:
                raise BackupError(f"{IDENTITY_ENV} holds a line that is not an age identity") from None
        return found

    def identity_file_text(self) -> str:
        """The identities as an age identity file (what `age -d -i FILE` reads)."""
        return "".join(f"# public key: {r}\n" for r in self.recipients) + "".join(f"{i}\n" for i in self.identities)


def _read_identities(value: str) -> tuple[str, ...]:
    """GATE_BACKUP_IDENTITY: the key itself, or the path of an identity file (comments and blank lines skipped)."""
    value = value.strip()
    if not value:
        return ()
    if value.startswith("AGE-SECRET-KEY-"):
        text = value
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise BackupError(f"{IDENTITY_ENV}: the identity file cannot be read ({why})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
