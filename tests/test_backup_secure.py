"""The backup, secured (issue 10 items 1 and 2): an age file a DBA opens without our tool, streamed so the
plaintext dump never touches the disk, both sha256s recorded, stored off the box and fetched back verified,
every restore decrypting into pg_restore; and a database written to after the backup's snapshot refused before
the migration, naming the tables, with a writer that keeps inserting through maintenance."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.backup import BackupError, BackupKeys
from migration_gate.checks import backups
from migration_gate.config import ConfigError, load_config
from migration_gate.core.errors import Refused
from migration_gate.core.progress import Progress
from migration_gate.core.redact import redact_text
from migration_gate.db.binaries import find_binaries
from migration_gate.report import signoff
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import schema_state
from sandbox.api_process import SandboxHooks
from sandbox.target import Sandbox
from tests.support.cutover import PATIENTS, cutover_target, legacy_snapshot, plaintext_dumps

AGE = shutil.which("age")


def _identity_file(keys: BackupKeys, folder: Path) -> Path:
    path = folder / "identity.txt"
    path.write_text(keys.identity_file_text())
    path.chmod(0o600)
    return path


# -- encrypted at rest, streamed --------------------------------------------------------------------------------

@pytest.fixture
def spy_binaries(tmp_path: Path):
    """The real PostgreSQL binaries, with pg_dump wrapped to log how it was called and what its stdout is."""
    real = find_binaries()
    spy = tmp_path / "bin"
    spy.mkdir()
    for tool in ("pg_restore", "psql"):
        (spy / tool).symlink_to(real.tool(tool))
    log = tmp_path / "pg_dump.log"
    (spy / "pg_dump").write_text(f"#!/bin/sh\nif [ -p /dev/stdout ]; then kind=pipe; else kind=other; fi\n"
                                 f"echo \"args: $* stdout: $kind\" >> {log}\nexec {real.tool('pg_dump')} \"$@\"\n")
    (spy / "pg_dump").chmod(0o755)
    return dataclasses.replace(real, bindir=spy), log


def test_the_dump_is_an_age_file_streamed_from_pg_dump_with_both_digests(legacy_db: str, tmp_path: Path,
                                                                          spy_binaries) -> None:
    binaries, log = spy_binaries
    keys = BackupKeys.generate()
    folder = tmp_path / "backup"
    seen: list[Path] = []
    done = threading.Event()

    def watch() -> None:  # anything in clear in the backup folder while the dump runs
        while not done.is_set():
            if folder.exists():
                seen.extend(plaintext_dumps(folder))
            time.sleep(0.002)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        record = backup.take_backup(legacy_db, folder, binaries, keys=keys)
    finally:
        done.set()
        watcher.join()
    dump = Path(record.path)
    assert dump.name.endswith(".dump.age") and backup.is_encrypted(dump) and not backup.is_plaintext_dump(dump)
    assert not seen and not plaintext_dumps(tmp_path)
    calls = log.read_text().splitlines()
    dump_call = next(line for line in calls if "--snapshot=" in line)
    assert "--file" not in dump_call and "-f " not in dump_call  # pg_dump writes to its stdout...
    assert dump_call.endswith("stdout: pipe")  # ... which is a pipe into the encryptor, never a file
    assert record.encryption == "age" and record.recipients == list(keys.recipients)
    assert record.sha256 == backup.sha256_file(dump) and record.size == dump.stat().st_size
    assert record.plaintext_sha256 != record.sha256 and record.plaintext_size > 0
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted([dump.name, dump.name + ".json",
                                                               dump.name + ".catalog.json"])
    assert backup.BackupRecord.load(dump).plaintext_sha256 == record.plaintext_sha256
    assert len(backup.list_contents(dump, keys=keys)) > 50
    backup.verify_plaintext(dump, record, keys)


@pytest.mark.skipif(AGE is None, reason="the age command line (Debian package age) is not installed")
def test_a_dba_opens_the_backup_with_the_age_command_and_pg_restore(legacy_db: str, tmp_path: Path) -> None:
    keys = BackupKeys.generate()
    record = backup.take_backup(legacy_db, tmp_path / "backup", keys=keys)
    identity = _identity_file(keys, tmp_path)
    age = subprocess.run([AGE, "-d", "-i", str(identity), record.path], capture_output=True, timeout=60)
    assert age.returncode == 0, age.stderr
    assert hashlib.sha256(age.stdout).hexdigest() == record.plaintext_sha256
    listing = subprocess.run([find_binaries().tool("pg_restore"), "--list"], input=age.stdout, capture_output=True,
                             timeout=60)
    assert listing.returncode == 0 and b"TABLE DATA public clients_hipaa" in listing.stdout


def test_restores_decrypt_into_pg_restore_and_bad_keys_or_files_are_one_line(legacy_db: str, pg, tmp_path: Path
                                                                              ) -> None:
    keys = BackupKeys.generate()
    dump = Path(backup.take_backup(legacy_db, tmp_path / "backup", keys=keys).path)
    restored = backup.restore(dump, pg.dsn(), "t_secure_restored", keys=keys)
    with psycopg.connect(restored) as conn:
        assert conn.execute("SELECT count(*) FROM clients_hipaa").fetchone()[0] > 0
    backup.drop_database(pg.dsn(), "t_secure_restored")
    truncated = tmp_path / "truncated.dump.age"
    truncated.write_bytes(dump.read_bytes()[:4000])
    cases = {"cannot be decrypted with the identity in GATE_BACKUP_IDENTITY": (dump, BackupKeys.generate()),
             "is age-encrypted: set GATE_BACKUP_IDENTITY": (dump, BackupKeys()),
             "is corrupt or truncated": (truncated, keys)}
    for (fragment, (path, wrong)), jobs in itertools.product(cases.items(), (1, 2)):
        with pytest.raises(BackupError) as caught:
            backup.restore(path, pg.dsn(), "t_secure_wrong", keys=wrong, jobs=jobs)
        assert fragment in str(caught.value) and "\n" not in str(caught.value)
        assert "AGE-SECRET-KEY" not in str(caught.value)
        with psycopg.connect(pg.dsn()) as conn:  # nothing left behind
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 't_secure_wrong'").fetchone() is None
    backup.restore_in_place(dump, legacy_db, keys=keys)  # the rollback's restore, decrypting on the way
    assert backups.readable_by_pg_restore(dump, keys).ok
    assert backups.restores_to_recorded_content(dump, pg.dsn(), keys).ok
    assert backups.restores_to_recorded_content(dump, pg.dsn(), keys, jobs=2).ok
    assert backups.encrypted_at_rest(dump).ok


def test_the_identity_comes_from_the_environment_as_a_file_or_the_key(tmp_path: Path) -> None:
    keys = BackupKeys.generate()
    identity = _identity_file(keys, tmp_path)
    settings = dataclasses.replace(load_config().backup, recipients=keys.recipients)
    by_file = BackupKeys.from_environment(settings, {"GATE_BACKUP_IDENTITY": str(identity)})
    by_value = BackupKeys.from_environment(settings, {"GATE_BACKUP_IDENTITY": keys.identities[0]})
    assert by_file.identities == by_value.identities == keys.identities
    assert keys.identities[0] not in repr(by_file)
    assert keys.identities[0] not in redact_text(f"hook failed: {keys.identities[0]}")
    with pytest.raises(BackupError, match="the identity file cannot be read"):
        BackupKeys.from_environment(settings, {"GATE_BACKUP_IDENTITY": str(tmp_path / "missing.txt")})
    gate = dataclasses.replace(load_config(), backup=settings, hooks={})
    assert backup.backup_inputs(gate, {"GATE_BACKUP_IDENTITY": str(identity)}) == [
        "hook store_backup: not configured in [hooks]", "hook fetch_backup: not configured in [hooks]"]
    problems = backup.backup_inputs(load_config(), {"GATE_BACKUP_IDENTITY": str(BackupKeys.generate().identities[0])})
    assert any("names no recipient" in p for p in problems)
    assert any("store_backup: still the shipped placeholder" in p for p in problems)
    stranger = dataclasses.replace(gate, hooks={"store_backup": "true", "fetch_backup": "true"})
    assert backup.backup_inputs(stranger, {"GATE_BACKUP_IDENTITY": BackupKeys.generate().identities[0]}) == [
        "backup: no identity in GATE_BACKUP_IDENTITY matches a recipient: a restore could not open the backup"]


@pytest.mark.parametrize(("section", "fragment"), [
    ('encrypt = "rot13"', "encrypt must be one of age, none"),
    ('recipients = ["ssh-rsa AAAA"]', "recipients must be a list of age public keys"),
    ("retention_days_local = -1", "retention_days_local must be a non-negative number"),
    ('change_check = "vibes"', "change_check must be 'digest' or 'counters'"),
    ("compress = 10", "compress must be a whole number from 0 to 9"),
    ('jobs = "two"', "jobs must be a whole number from 0 to 64"),
    ('identity = "AGE-SECRET-KEY-1XYZ"', "unknown key identity"),
])
def test_a_bad_backup_section_is_one_line(tmp_path: Path, section: str, fragment: str) -> None:
    head, rest = load_config().path.read_text().split("\n[backup]\n", 1)
    key = section.split(" = ")[0]
    body, sep, tail = rest.partition("\n[")
    body = "\n".join(line for line in body.splitlines() if not line.startswith(f"{key} = "))
    text = f"{head}\n[backup]\n{section}\n{body}{sep}{tail}"
    config = tmp_path / "migration.toml"
    config.write_text(text.replace('file = "sandbox/', f'file = "{load_config().path.parent}/sandbox/'))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert fragment in str(caught.value) and "[backup]" in str(caught.value)
    assert "AGE-SECRET-KEY" not in str(caught.value)


def test_a_plaintext_backup_only_when_configured_and_the_sign_off_warns(legacy_db: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    record = backup.take_backup(legacy_db, run / "backup", keys=BackupKeys(encrypt="none"))
    assert record.encryption == "none" and backup.is_plaintext_dump(Path(record.path))
    assert not backups.encrypted_at_rest(Path(record.path)).ok
    assert backups.encrypted_at_rest(Path(record.path), required=False).ok
    state = Gate(load_config(), _cli_target(legacy_db), run, Progress(quiet=True)).state
    state.backup = record.summary()
    report = signoff.render(state, run, {})
    assert "the backup is NOT ENCRYPTED" in report
    assert f"href='backup/{Path(record.path).name}'" not in report and "(PHI in clear: not linked)" in report
    with pytest.raises(BackupError, match="names no recipient"):  # encrypted is the default: no key, no dump
        backup.take_backup(legacy_db, tmp_path / "none", keys=BackupKeys())
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


def _cli_target(dsn: str):
    from migration_gate.app.hooks import CutoverTarget, ShellHooks
    return CutoverTarget(dsn=dsn, key="", api_base_url="", api_username="", api_password="", hooks=ShellHooks({}))


# -- the cut-over on the sandbox: stored off the box, fetched back, no plaintext anywhere ---------------------

@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _run(box: Sandbox, run_dir: Path, hooks=None):
    gate = dataclasses.replace(load_config(), deploy_wait_seconds=6)
    return Gate(gate, cutover_target(box, hooks or SandboxHooks(box.api, offsite=box.offsite)), run_dir,
                Progress(quiet=True)).run()


class TamperingStore(SandboxHooks):
    """A store that gives back something else than it was given (a corrupted or replaced object)."""

    def fetch_backup(self, env: dict[str, str]) -> None:
        super().fetch_backup(env)
        with open(env["GATE_BACKUP_DEST"], "ab") as handle:
            handle.write(b"x")


class BrokenStore(SandboxHooks):
    def store_backup(self, env: dict[str, str]) -> str:
        raise RuntimeError("the bucket refused the upload (AccessDenied)")


@pytest.mark.parametrize(("hooks", "fragment"), [
    (TamperingStore, "does not match the backup's sha256"),
    (BrokenStore, "the bucket refused the upload"),
])
def test_a_backup_not_safely_off_the_box_stops_before_the_migration(sandbox: Sandbox, tmp_path: Path, hooks,
                                                                     fragment: str) -> None:
    before = legacy_snapshot(sandbox.dsn, audit=False)
    state = _run(sandbox, tmp_path / "run", hooks(sandbox.api, offsite=sandbox.offsite))
    assert state.status == "red" and state.phase("backup").status == "failed"
    assert fragment in state.phase("backup").detail
    assert state.phase("migration").status == "pending"
    assert legacy_snapshot(sandbox.dsn, audit=False) == before


def test_the_rollback_fetches_a_lost_local_backup_back_and_decrypts_it(sandbox: Sandbox, tmp_path: Path) -> None:
    """The local file is gone when the rollback needs it: it comes back from the store, sha256 checked."""
    class LoseLocalThenFail(SandboxHooks):
        def deploy(self, use_hipaa_schema: bool) -> None:
            if use_hipaa_schema:
                Path(state_holder["path"]).unlink()
                raise RuntimeError("the host's deploy failed")
            super().deploy(use_hipaa_schema)
    state_holder: dict[str, str] = {}
    before = legacy_snapshot(sandbox.dsn, audit=False)
    hooks = LoseLocalThenFail(sandbox.api, offsite=sandbox.offsite)
    gate = Gate(dataclasses.replace(load_config(), deploy_wait_seconds=6), cutover_target(sandbox, hooks),
                tmp_path / "run", Progress(quiet=True))
    original = gate._backup

    def remember(record):
        ok = original(record)
        state_holder["path"] = gate.state.backup["path"]
        return ok
    gate._backup = remember
    state = gate.run()
    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert "decrypted into pg_restore" in state.phase("restore").detail
    assert Path(state_holder["path"]).is_file()
    assert legacy_snapshot(sandbox.dsn, audit=False) == before


# -- writes during the window -----------------------------------------------------------------------------------

class WriterThroughMaintenance(SandboxHooks):
    """An app instance or a job that ignores maintenance mode: once maintenance is on, it keeps inserting audit
    rows into a legacy table (bounded: at most 60 s, every 20 ms) until maintenance goes off."""

    def __init__(self, api, offsite: Path, dsn: str) -> None:
        super().__init__(api, offsite)
        self.dsn = dsn
        self.stop = threading.Event()
        self.inserted = 0
        self.thread: threading.Thread | None = None

    def _write(self) -> None:
        deadline = time.monotonic() + 60
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set() and time.monotonic() < deadline:
                conn.execute("INSERT INTO audit_logs_hipaa (user_id, action, resource_type) "
                             "VALUES (1, 'read', 'client')")
                self.inserted += 1
                time.sleep(0.02)

    def maintenance(self, on: bool) -> None:
        super().maintenance(on)
        if on and self.thread is None:
            self.thread = threading.Thread(target=self._write, daemon=True)
            self.thread.start()
        elif not on:
            self.stop.set()


@pytest.mark.parametrize("method", ["digest", "counters"])
def test_a_writer_through_maintenance_is_caught_before_the_migration(sandbox: Sandbox, tmp_path: Path,
                                                                      method: str) -> None:
    hooks = WriterThroughMaintenance(sandbox.api, sandbox.offsite, sandbox.dsn)
    gate_config = dataclasses.replace(load_config(), deploy_wait_seconds=6,
                                      backup=dataclasses.replace(load_config().backup, change_check=method))
    gate = Gate(gate_config, cutover_target(sandbox, hooks), tmp_path / "run", Progress(quiet=True))
    if method == "counters":  # statistics are flushed about once a second: give the writer's a moment
        original = gate._guard_migration

        def later() -> None:
            time.sleep(1.5)
            original()
        gate._guard_migration = later
    try:
        with pytest.raises(Refused) as caught:
            gate.run()
    finally:
        hooks.stop.set()
        if hooks.thread:
            hooks.thread.join(10)
    message = str(caught.value)
    assert message.startswith("refusing to migrate: the database was written to after the backup's snapshot")
    assert "public.audit_logs_hipaa:" in message and "clients_hipaa" not in message
    assert hooks.inserted > 0
    state = gate.state
    assert state.status == "refused" and state.failure == message
    assert state.phase("backup").status == "passed" and state.phase("migration").status == "pending"
    assert state.maintenance_off_at is not None  # nothing migrated: the app goes back live on legacy
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"
    assert "1 changed" in state.backup["change_check"]


def test_change_detection_names_each_kind_of_write_and_nothing_when_untouched(legacy_db: str, tmp_path: Path
                                                                             ) -> None:
    record = backup.take_backup(legacy_db, tmp_path / "backup")
    assert backup.changes_since(legacy_db, record, "digest") == []
    assert backup.changes_since(legacy_db, record, "counters") == []
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("UPDATE clients_hipaa SET status = 'inactive' WHERE id = 1")
        conn.execute("DELETE FROM sessions_hipaa WHERE id = (SELECT min(id) FROM sessions_hipaa)")
        conn.execute("CREATE TABLE public.stray (id int)")
    digest = backup.changes_since(legacy_db, record, "digest")
    assert [line.split(":")[0] for line in digest] == ["public.stray", "public.clients_hipaa", "public.sessions_hipaa"]
    assert "rows at the backup" in digest[1] and "content differs" in digest[1]
    time.sleep(1.2)  # the sessions above flushed their statistics when they ended
    counters = backup.changes_since(legacy_db, record, "counters")
    assert "public.clients_hipaa: 0 inserted, 1 updated, 0 deleted since the backup" in counters
    assert any(line.startswith("public.sessions_hipaa: 0 inserted, 0 updated, 1 deleted") for line in counters)
