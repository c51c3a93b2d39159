"""A copy of the target to rehearse on, of the kind [rehearsal] names, always removed afterwards.

PRE-08 (migration_gate.rehearsal.scratch) and the dress rehearsal (scripts/rehearse --against-copy) need the target's
data somewhere they may migrate and roll back freely. Where is a team's choice, because each costs something:
"scratch" makes scratch databases on the target's own server (load and a CREATEDB role on production), "local"
starts a throwaway PostgreSQL here and restores a fresh dump of the target into it (production only serves the
dump), "hooks" asks the team's own commands for a copy (a Neon branch: production is not even dumped). Each
yields the same Copy: a server to make scratch databases on, the "before" database (the copy's data as taken,
never migrated), a label saying which copy it is and the time its data is from. The janitor (an ExitStack)
drops, stops or deletes the copy whatever happens in between, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.app.hooks import ShellHooks, sigterm_unwinds
from migration_gate.backup.dump import take_backup
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.record import BackupError
from migration_gate.backup.restores import database_dsn, drop_database, restore
from migration_gate.config import GateConfig
from migration_gate.core.errors import GateError, MigrationGateError
from migration_gate.core.redact import describe_target, safe_message
from migration_gate.db import connection as db
from migration_gate.db.binaries import BinariesNotFound, PgBinaries, find_binaries
from migration_gate.db.embedded import EmbeddedError, EmbeddedPostgres

CLONE_TRIES = 5  # a clone needs its source free of other sessions; a late one gets this many chances
# The environment of the [rehearsal] hooks (documented in migration.toml).
SOURCE_ENV, OWNER_ENV = "GATE_COPY_SOURCE", "GATE_COPY_OWNER_PID"
DSN_ENV, LABEL_ENV = "GATE_COPY_DSN", "GATE_COPY_LABEL"


class CopyError(MigrationGateError, RuntimeError):
    """The copy could not be made; one line, no secrets."""


class ScratchDatabase:
    """Owns one scratch database on a server: created on entry (cloned from `template` when given and the role
    may, else restored from the dump), dropped on exit, whatever happened in between."""

    def __init__(self, server_dsn: str, name: str, dump: Path, binaries: PgBinaries | None = None,
                 keys: BackupKeys | None = None, template: str | None = None, jobs: int = 1) -> None:
        self.server_dsn, self.name, self.dump, self.binaries, self.keys = server_dsn, name, dump, binaries, keys
        self.template, self.jobs = template, jobs
        self.dsn = ""
        self.how = "restored"

    def __enter__(self) -> ScratchDatabase:
        if self.template is not None and self._clone():
            self.how = "cloned"
            return self
        self.dsn = restore(self.dump, self.server_dsn, self.name, self.binaries, replace=True, keys=self.keys,
                           jobs=self.jobs)
        return self

    def _clone(self) -> bool:
        """CREATE DATABASE ... TEMPLATE, the template's owner may (a managed server's role owns what it created).
        False when it may not, or the template stays busy: the caller restores instead."""
        admin = database_dsn(self.server_dsn, "postgres")
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(self.name),
                                                                     sql.Identifier(self.template))
        drop_database(self.server_dsn, self.name)
        with db.connect(admin, autocommit=True) as conn:
            for attempt in range(CLONE_TRIES):
                try:
                    conn.execute(statement)
                except psycopg.errors.ObjectInUse:  # "source database is being accessed by other users"
                    time.sleep(0.5 * (attempt + 1))
                    continue
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported):
                    return False
                self.dsn = database_dsn(self.server_dsn, self.name)
                return True
        return False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Dropped, or red with its name: a scratch copy of production that stays behind is never silent (on the
        production server it holds PHI, and it takes the disk). The error names the database and the server
        (describe_target: never a password), with what stopped the drop; a failure already under way is kept in
        the line. Ctrl-C under way is not replaced: the line goes to stderr."""
        try:
            drop_database(self.server_dsn, self.name)
        except (psycopg.Error, BackupError) as error:
            line = (f"scratch database {self.name} on {describe_target(self.server_dsn)} could NOT be dropped: "
                    f"{safe_message(error)}; drop it by hand (it holds a copy of the target's data)")
            if exc is not None and not isinstance(exc, Exception):
                print(f"migration-gate: {line}", file=sys.stderr)
                return
            if exc is not None:
                line += f" (after: {safe_message(exc)})"
            raise BackupError(line) from None


@contextlib.contextmanager
def dump_of(dsn: str, binaries: PgBinaries | None, lock_wait_timeout: str | None = None,
            compress: int = 0, jobs: int = 1) -> Iterator[tuple[Path, BackupKeys]]:
    """A dump for the rehearsal, encrypted to a key pair that lives only in this process's memory (the plaintext
    never touches the disk), deleted with its folder afterwards, and proven gone. The target is live: pg_dump
    waits no longer than lock_wait_timeout for a table's lock ([precheck] lock_timeout)."""
    keys = BackupKeys.generate()
    with tempfile.TemporaryDirectory(prefix="gate-scratch-") as folder:
        yield Path(take_backup(dsn, Path(folder), binaries, keys=keys,
                               lock_wait_timeout=lock_wait_timeout, compress=compress, jobs=jobs).path), keys
    if Path(folder).exists():
        raise BackupError(f"the rehearsal's temporary dump folder {folder} was not removed")


@dataclass
class Copy:
    """Where a rehearsal runs: scratch databases go on server_dsn's server; before_dsn holds the copy's data as
    taken (never migrated); dump (encrypted to keys) is a dump of that data, for the restore rehearsal."""

    kind: str
    label: str
    server_dsn: str
    before_dsn: str
    before_name: str
    as_of: datetime
    dump: Path | None = None
    keys: BackupKeys | None = None
    binaries: PgBinaries | None = None  # the binaries that serve this copy's server (the local cluster's)

    def age_minutes(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or datetime.now(UTC)) - self.as_of).total_seconds() / 60)

    def note(self) -> str:
        """What the report says of the copy: which one, and how old its data was when the checks ran."""
        return (f"rehearsed on {self.label}; its data as of {self.as_of.isoformat(timespec='seconds')} "
                f"({self.age_minutes():.1f} min old at check time)")

    def record(self, source_dsn: str) -> dict[str, str]:
        """For state.json: which copy, its data's time, and what it copied (host:port/db, no secrets)."""
        return {"copy": self.label, "as_of": self.as_of.isoformat(timespec="seconds"),
                "source": describe_target(source_dsn)}


def roles_granted(target_dsn: str) -> list[str]:
    """The roles the target's grants name (tables, sequences, schemas): a restore replays those GRANTs, so a
    local cluster needs the roles, as the target's server has them."""
    query = ("SELECT DISTINCT a.grantee::regrole::text FROM pg_class c, aclexplode(c.relacl) a "
             "WHERE c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') AND a.grantee <> 0 "
             "UNION SELECT DISTINCT a.grantee::regrole::text FROM pg_namespace n, aclexplode(n.nspacl) a "
             "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND a.grantee <> 0")
    with db.connect(target_dsn) as conn:
        names = [row[0].strip('"') for row in conn.execute(query)]
        current = conn.execute("SELECT current_user").fetchone()[0]
    return sorted(n for n in names if n not in (current, "postgres") and not n.startswith("pg_"))


def _parse_hook_output(stdout: str, started: datetime) -> tuple[str, datetime, str]:
    """create_copy's last non-empty line: a DSN, or {"dsn": ..., "as_of": ..., "label": ...}."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise CopyError("hook create_copy printed nothing (it must print the copy's connection string last)")
    last, as_of, label = lines[-1], started, ""
    if last.startswith("{"):
        try:
            data = json.loads(last)
            dsn = str(data["dsn"])
            if data.get("as_of"):
                as_of = datetime.fromisoformat(str(data["as_of"]))
                as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
            label = str(data.get("label") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise CopyError('hook create_copy: its last line is JSON but not {"dsn": ..., "as_of": ISO-8601, '
                            f'"label": ...}} ({exc.__class__.__name__})') from None
    else:
        dsn = last
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise CopyError("hook create_copy: its last line is not a connection string") from None
    return dsn, as_of, label


# SIGTERM (a suite stopped by its gate, a CI cancel) unwinds like Ctrl-C, so the janitor still runs.
janitor_on_sigterm = sigterm_unwinds


@contextlib.contextmanager
def copy_of(target_dsn: str, gate: GateConfig, binaries: PgBinaries | None = None, stamp: str | None = None,
            kind: str | None = None, dump_copy: bool = True) -> Iterator[Copy]:
    """A copy of the target of [rehearsal]'s kind (or `kind`), removed on exit whatever happened. dump_copy=False:
    the hook kind's copy is not dumped (the dress rehearsal takes its own backup of it)."""
    kind = kind or gate.rehearsal.kind
    stamp = stamp or f"{os.getpid()}_{int(time.time())}"
    with janitor_on_sigterm(), contextlib.ExitStack() as janitor:
        try:
            if kind == "hooks":
                copy = _from_hooks(janitor, target_dsn, gate)
                if dump_copy:
                    copy.dump, copy.keys = janitor.enter_context(dump_of(
                        copy.before_dsn, binaries, gate.precheck.lock_timeout, gate.backup.compress,
                        gate.backup.workers))
                copy.binaries = binaries
            else:
                copy = _restored(janitor, target_dsn, gate, binaries, stamp, kind)
        except (EmbeddedError, BinariesNotFound, BackupError, GateError, psycopg.Error, OSError) as exc:
            if isinstance(exc, CopyError):
                raise
            raise CopyError(f"the {kind} copy could not be made: {safe_message(exc)}") from None
        yield copy


def _restored(janitor: contextlib.ExitStack, target_dsn: str, gate: GateConfig, binaries: PgBinaries | None,
              stamp: str, kind: str) -> Copy:
    """scratch / local: a fresh dump of the target, restored into "before" on the target's server or on a
    throwaway local cluster."""
    server, local_binaries = target_dsn, binaries
    label = f"scratch database on the target's server ({describe_target(target_dsn)})"
    if kind == "local":
        cluster = EmbeddedPostgres(binaries or find_binaries())
        janitor.callback(cluster.stop)
        cluster.start()
        roles = roles_granted(target_dsn)
        for role in roles:
            cluster.create_role(role)
        if roles:  # as a host's owner role administers the app's: it sees their sessions (PRE-10)
            cluster.create_role(cluster.owner, createdb=True, member_of=tuple(roles))
        server, local_binaries = cluster.dsn(), cluster.binaries
        label = f"local throwaway cluster (PostgreSQL {cluster.binaries.major})"
    as_of = datetime.now(UTC)
    dump, keys = janitor.enter_context(dump_of(target_dsn, binaries, gate.precheck.lock_timeout,
                                               gate.backup.compress, gate.backup.workers))
    before = janitor.enter_context(ScratchDatabase(server, f"gate_before_{stamp}", dump, local_binaries, keys,
                                                   None, gate.backup.workers))
    return Copy(kind=kind, label=label, server_dsn=server, before_dsn=before.dsn, before_name=before.name,
                as_of=as_of, dump=dump, keys=keys, binaries=local_binaries)


def _from_hooks(janitor: contextlib.ExitStack, target_dsn: str, gate: GateConfig) -> Copy:
    """hooks: create_copy's copy is "before" itself; delete_copy is registered before anything else can fail."""
    config = gate.rehearsal
    hooks = ShellHooks({"create_copy": config.create_copy or "", "delete_copy": config.delete_copy or ""},
                       timeout=config.timeout_seconds, pass_env=gate.hook_pass_env)
    env = {SOURCE_ENV: target_dsn, OWNER_ENV: str(os.getpid())}
    started = datetime.now(UTC)
    try:
        dsn, as_of, label = _parse_hook_output(hooks._run("create_copy", env), started)
    except BaseException:  # it may have made a copy before failing or printing nonsense: delete_copy by owner pid
        with contextlib.suppress(Exception):
            hooks._run("delete_copy", {OWNER_ENV: env[OWNER_ENV]})
        raise

    def delete() -> None:  # the copy's DSN, not the target's: deleting needs no access to production
        hooks._run("delete_copy", {OWNER_ENV: env[OWNER_ENV], DSN_ENV: dsn, LABEL_ENV: label})
    janitor.callback(delete)
    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or ""
    shown = label or describe_target(dsn)
    return Copy(kind="hooks", label=f"copy from hook create_copy: {shown}", server_dsn=dsn, before_dsn=dsn,
                before_name=str(name), as_of=as_of)
