"""Backups with pg_dump, their record, and restores: one module per job (the library imports from those).

record (the JSON beside a dump, its MAC, BackupError), keys (age recipients and identities), tools (the client
tools' versions and failures), checksums (content digests in the dump's snapshot, changes since), dump (taking
one), reading (decrypt once, hash, verify), restores (into a scratch database, drop it), inplace (the rollback's
atomic restore), offsite (store and fetch-back hooks), inputs (the pre-flight's questions), digests (the
integrity checks' baseline). This face hands the common names on for the tests.
"""

from .checksums import changes_since
from .dump import take_backup
from .inplace import restore_in_place
from .inputs import backup_inputs
from .keys import IDENTITY_ENV, RECIPIENTS_ENV, BackupKeys
from .reading import is_encrypted, is_plaintext_dump, list_contents, verify_plaintext, verify_unchanged
from .record import CATALOG_SUFFIX, PHI_KEY_ENV, RECORD_SUFFIX, BackupError, BackupRecord, record_key, sha256_file
from .restores import FORCE_SINCE, data_groups, database_dsn, drop_database, restore
from .tools import pg_restore_problem, split_password

__all__ = ["CATALOG_SUFFIX", "FORCE_SINCE", "IDENTITY_ENV", "PHI_KEY_ENV", "RECIPIENTS_ENV", "RECORD_SUFFIX",
           "BackupError", "BackupKeys", "BackupRecord", "backup_inputs", "changes_since", "data_groups",
           "database_dsn", "drop_database", "is_encrypted", "is_plaintext_dump", "list_contents",
           "pg_restore_problem", "record_key", "restore", "restore_in_place", "sha256_file", "split_password",
           "take_backup", "verify_plaintext", "verify_unchanged"]
