"""Bad input, each one line and nothing changed: the inputs tests/test_cli.py, tests/test_preflight.py and
tests/test_checks_backup_rollback.py do not already cover, in one table. Each case runs the command as an operator
would, and asserts its exit code (migration_gate.report.verdict), its line, no traceback, and the database exactly as it
was (schema state legacy, every legacy table's checksum and the catalog equal).

Kinds of answer: "line" (one line on stderr), "list" (the pre-flight's refusal: its first line, then one line per
missing input), "verdict" (a red gate: nothing migrated, the verdict line on stdout names the phase and why),
"phase" (a phase command's red phase: its line on stdout, then the run folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.core.redact import describe_target
from migration_gate.run.runstate import schema_state
from sandbox.target import DATABASE, Sandbox
from tests.conftest import MIGRATION, ROOT
from tests.support.cutover import legacy_snapshot, rollback_run
from tests.support.preflight import environment, write_config

WRONG_PASSWORD_ROLE = "gate_pw"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    """A small sandbox; one role of it (gate_pw) logs in with a password over TCP, so a wrong one is refused."""
    sandbox = Sandbox(workdir=tmp_path_factory.mktemp("bad-input") / "sandbox", patients=40,
                      progress=Progress(quiet=True)).start()
    with psycopg.connect(sandbox.cluster.admin_dsn(DATABASE), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {WRONG_PASSWORD_ROLE} LOGIN PASSWORD 'the-right-one'")
    hba = sandbox.cluster.data_dir / "pg_hba.conf"
    hba.write_text(f"host all {WRONG_PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(sandbox.cluster.admin_dsn(DATABASE), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    yield sandbox
    sandbox.stop()


def _edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))


def _halfway(folder: Path) -> Path:
    """The migration with a statement that fails after half of it ran."""
    lines = MIGRATION.read_text().splitlines(keepends=True)
    cut = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith("-- "))
    path = folder / "halfway.sql"
    path.write_text("".join(lines[:cut]) + "SELECT 1 / 0;\n" + "".join(lines[cut:]))
    return path


def _syntax_error(folder: Path) -> Path:
    path = folder / "syntax.sql"
    path.write_text("BEGIN;\nALTER TABLE clients_hipaa RENAME TO patients;\nCREATE TABLEX oops (id int);\n")
    return path


def _full_disk(folder: Path) -> Path:
    mount = folder / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs as a full disk")
    return mount


# case: (command, kind, exit code, the line (a fragment of it), how to set it up)
# setup(box, folder, config) -> (environment overrides, extra arguments)
CASES = {
    "malformed DATABASE_URL": ("cutover", "line", 2, "cutover: DATABASE_URL is not a valid connection string",
                               lambda b, f, c: ({"DATABASE_URL": "postgres://gate@[::1/app"}, [])),
    "unreachable DATABASE_URL": ("cutover", "list", 4, "database: unreachable (OperationalError (",
                                 lambda b, f, c: ({"DATABASE_URL": "postgresql://gate:pw@127.0.0.1:1/app"}, [])),
    "wrong database password": (
        "cutover", "list", 4, "password authentication failed for user",
        lambda b, f, c: ({"DATABASE_URL": f"postgresql://{WRONG_PASSWORD_ROLE}:not-the-one@127.0.0.1:"
                                          f"{b.cluster.port}/{DATABASE}"}, [])),
    "missing key": ("cutover", "line", 2, "DATABASE_URL is set but PHI_ENCRYPTION_KEY is not",
                    lambda b, f, c: ({"PHI_ENCRYPTION_KEY": None}, [])),
    "key of the wrong length": ("cutover", "line", 2, "PHI_ENCRYPTION_KEY must be 64",
                                lambda b, f, c: ({"PHI_ENCRYPTION_KEY": "ab" * 31}, [])),
    "configuration: unknown key": (
        "cutover", "line", 2, "[migration]: unknown key lock_timout",
        lambda b, f, c: (_edit(c, 'lock_timeout = "10s"', 'lock_timout = "10s"'), ({}, []))[1]),
    "configuration: unknown section": (
        "cutover", "line", 2, "unknown section [hook]",
        lambda b, f, c: (_edit(c, "[budgets]\n", "[hook]\nmaintenance_on = 'x'\n\n[budgets]\n"), ({}, []))[1]),
    "configuration: wrong type": (
        "cutover", "line", 2, "[budgets]: 'downtime_minutes' must be a float",
        lambda b, f, c: (_edit(c, "downtime_minutes = 180", 'downtime_minutes = "3 hours"'), ({}, []))[1]),
    "configuration: wrong type of a number": (
        "cutover", "line", 2, "[budgets]: 'api_latency_samples' must be an integer",
        lambda b, f, c: (_edit(c, "api_latency_samples = 20", 'api_latency_samples = "twenty"'), ({}, []))[1]),
    "configuration: hook timeout not a number": (
        "cutover", "line", 2, "[hooks]: timeout_seconds must be a positive number",
        lambda b, f, c: (_edit(c, "[hooks]\n", "[hooks]\ntimeout_seconds = \"soon\"\n"), ({}, []))[1]),
    "reports folder cannot be written": (
        "cutover", "line", 1, "cutover: Not a directory: ",
        lambda b, f, c: ((f / "a-file").write_text("x"), ({"GATE_REPORTS_DIR": str(f / "a-file" / "reports")}, []))[1]),
    "a hook that hangs": (
        "cutover", "verdict", 1, "phase maintenance failed: GateError: hook maintenance_on did not finish within 2 s",
        lambda b, f, c: (_edit(c, "[hooks]\n", "[hooks]\ntimeout_seconds = 2\n"),
                         _edit(c, f'maintenance_on = "echo maintenance_on >> {f / "calls"}"',
                               'maintenance_on = "sleep 60"'), ({}, []))[2]),
    "migration file with a syntax error": (
        "cutover", "verdict", 1, "failed: test_migration_and_rollback_rehearsed_on_a_scratch_copy",
        lambda b, f, c: ({"GATE_MIGRATION_FILE": str(_syntax_error(f))}, [])),
    "migration statement that fails halfway": (
        "cutover", "verdict", 1, "failed: test_migration_and_rollback_rehearsed_on_a_scratch_copy",
        lambda b, f, c: ({"GATE_MIGRATION_FILE": str(_halfway(f))}, [])),
    "disk fills during the backup": (
        "backup", "phase", 1, "backup: FAILED in ",
        lambda b, f, c: ({}, [f"--run-dir={_full_disk(f)}"])),
    "premigration: unreachable DATABASE_URL": (
        "premigration", "line", 4, "migration-gate: target database 127.0.0.1:1/app is unreachable",
        lambda b, f, c: ({"DATABASE_URL": "postgresql://gate:pw@127.0.0.1:1/app"}, [])),
    "premigration: configuration with an unknown key": (
        "premigration", "line", 4, "[sandbox]: unknown key patiens",
        lambda b, f, c: (_edit(c, "patients = 300", "patiens = 300"), ({}, []))[1]),
}


def _command(name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    if name == "premigration":
        argv = [sys.executable, "-m", "pytest", "-m", "premigration", "-q", "-p", "no:cacheprovider", "tests_precheck",
                *args]
    else:
        argv = [sys.executable, "-m", "migration_gate.cli", name, "--quiet", *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _stderr_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_a_documented_exit_code_and_nothing_changed(box: Sandbox, tmp_path: Path,
                                                                         case: str) -> None:
    command, kind, code, line, setup = CASES[case]
    config = write_config(tmp_path, tmp_path / "calls")
    overrides, args = setup(box, tmp_path, config)
    env = environment(box, config, tmp_path / "reports", **overrides)
    before = legacy_snapshot(box.dsn, audit=False)
    try:
        done = _command(command, args, env)
    finally:
        if case == "disk fills during the backup":
            subprocess.run(["umount", args[0].split("=", 1)[1]], check=False)
    output = done.stdout + done.stderr
    assert done.returncode == code, (case, done.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    errors = _stderr_lines(done)
    if kind == "line":
        shown = errors if command != "premigration" else [x for x in output.splitlines() if "migration-gate:" in x]
        assert len(shown) == 1 and line in shown[0], (case, output[-3000:])
    elif kind == "list":
        assert errors[0].startswith("cutover: refusing to start: ") and errors[0].endswith("nothing was changed")
        assert all(x.startswith("  - ") for x in errors[1:]) and any(line in x for x in errors[1:]), errors
    elif kind == "phase":  # a phase command's red phase: its one line on stdout, then where the run is
        assert errors == [] and done.stdout.startswith(line) and "the disk is full" in done.stdout.splitlines()[0]
    else:
        verdict = [x for x in done.stdout.splitlines() if x.startswith("Verdict: ")]
        assert errors == [] and len(verdict) == 1 and line in verdict[0], (case, output[-3000:])
        assert verdict[0].startswith("Verdict: RED - "), verdict
    assert "not-the-one" not in output and "the-right-one" not in output
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"
    assert legacy_snapshot(box.dsn, audit=False) == before, f"{case}: the database changed"


@pytest.mark.parametrize("damage", ["truncated", "re-encrypted"])
def test_rollback_refuses_a_truncated_or_re_encrypted_backup(box: Sandbox, tmp_path: Path, damage: str) -> None:
    """A backup changed on disk (cut short by a full disk or a copy, or encrypted again by a storage tool)
    no longer matches the sha256 state.json recorded at backup time: the rollback refuses (exit 4) before touching
    the database."""
    record: backup.BackupRecord = rollback_run(box.dsn, tmp_path, describe_target(box.dsn))
    dump = Path(record.path)
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(b ^ 0x5A for b in data))
    config = write_config(tmp_path, tmp_path / "calls")
    before = legacy_snapshot(box.dsn, audit=False)
    done = _command("rollback", ["--run-dir", str(tmp_path / "run")], environment(box, config, tmp_path / "reports"))
    assert done.returncode == 4, done.stdout + done.stderr
    errors = _stderr_lines(done)
    assert len(errors) == 1 and re.search(
        r"sha256 [0-9a-f]{12} as read, state\.json recorded at backup time [0-9a-f]{12}: refusing", errors[0]), errors
    assert not (tmp_path / "calls").exists(), "a hook ran"
    assert legacy_snapshot(box.dsn, audit=False) == before
