"""Where the rehearsal runs ([rehearsal] kind): PRE-08 on each kind of copy (scratch databases on the target's
server, a throwaway local cluster, the sandbox's hooks making a second embedded cluster), its note naming the copy
and its data's age, a broken migration red on a copy, the janitor removing the copy whatever happened; and the
dress rehearsal (scripts/rehearse --against-copy) cutting over a copy while the target stays as it was."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from migration_gate.app.hooks import ShellHooks
from migration_gate.config import TARGET_VARIABLES, ConfigError, RehearsalConfig, load_config
from migration_gate.core.errors import GateError
from migration_gate.db.embedded import DEFAULT_BASE, OWNER_FILE, EmbeddedPostgres
from migration_gate.rehearsal import copies
from migration_gate.rehearsal.scratch import _state, rehearse_on_copy
from sandbox.provider import SandboxProvider
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import GATE, ROOT
from tests.support.copy_probe import set_connections

HOOKS = SandboxProvider().copy_hooks()


def _gate(kind: str, **hooks: str):
    return replace(GATE, rehearsal=RehearsalConfig(kind=kind, **hooks))


def _my_clusters(pg: EmbeddedPostgres) -> set[Path]:
    """Cluster folders this test process owns besides the session's own: copies not cleaned up."""
    found = set()
    for folder in DEFAULT_BASE.iterdir():
        try:
            owner = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() and folder != pg.dir:
            found.add(folder)
    return found


def _port_closed(port: int) -> bool:
    """Nothing listens there any more (a TCP connect, not a login: the cluster's roles have passwords)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("kind", ["scratch", "local", "hooks"])
def test_pre08_is_green_on_each_kind_of_copy_and_names_it(kind: str, legacy_db: str, pg) -> None:
    before = _state(legacy_db)
    result = rehearse_on_copy(legacy_db, _gate(kind, **(HOOKS if kind == "hooks" else {})), SANDBOX_KEY)
    assert result.ok, result.problems
    assert result.checked > 10
    label = {"scratch": "scratch database on the target's server (127.0.0.1:",
             "local": "local throwaway cluster (PostgreSQL ",
             "hooks": "copy from hook create_copy: second embedded cluster (PostgreSQL "}[kind]
    assert result.notes[0].startswith(f"rehearsed on {label}"), result.notes
    assert re.search(r"its data as of \d{4}-\d\d-\d\dT[\d:]+\+00:00 \(\d+\.\d min old at check time\)",
                     result.notes[0]), result.notes
    assert "rehearsed: SQL rollback" in result.notes[-1] and "restore of the backup" in result.notes[-1]
    assert _my_clusters(pg) == set(), "the copy's cluster was not removed"
    if kind == "hooks":
        port = int(re.search(r"port (\d+)\)", result.notes[0]).group(1))
        assert _port_closed(port), "the second cluster still serves"
    assert _state(legacy_db) == before, "the target changed"


@pytest.mark.parametrize("kind", ["local", "hooks"])
def test_a_broken_migration_is_red_on_a_copy_and_the_copy_is_still_removed(kind: str, legacy_db: str, pg) -> None:
    """Duplicated therapist_phi rows break the migration's UNIQUE(user_id): found on the copy, which goes."""
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO therapist_phi (user_id) VALUES (1)")
    result = rehearse_on_copy(legacy_db, _gate(kind, **(HOOKS if kind == "hooks" else {})), SANDBOX_KEY)
    assert any("the migration failed on the copy (first run): UniqueViolation" in p for p in result.problems), \
        result.problems
    assert _my_clusters(pg) == set(), "the copy's cluster was not removed after a red rehearsal"


def test_a_copy_hook_that_fails_is_one_red_line(legacy_db: str, pg) -> None:
    result = rehearse_on_copy(legacy_db, _gate("hooks", create_copy="echo 'no branch quota left' >&2; exit 3",
                                               delete_copy="true"), SANDBOX_KEY)
    assert result.problems == ["rehearsal copy (hooks): the hooks copy could not be made: GateError: hook "
                               "create_copy failed with exit code 3: no branch quota left"]
    result = rehearse_on_copy(legacy_db, _gate("hooks", create_copy="echo '{\"as_of\": 1}'", delete_copy="true"),
                              SANDBOX_KEY)
    assert len(result.problems) == 1 and "its last line is JSON but not" in result.problems[0], result.problems


def test_the_janitor_removes_the_copy_when_the_rehearsal_is_interrupted(legacy_db: str, pg) -> None:
    """Ctrl-C (or SIGTERM, which the copy turns into the same) in the middle: the local cluster still goes."""
    with pytest.raises(KeyboardInterrupt), copies.copy_of(legacy_db, _gate("local")) as copy:
        assert copy.kind == "local" and _my_clusters(pg)
        raise KeyboardInterrupt
    assert _my_clusters(pg) == set()


@pytest.mark.rehearsal
@pytest.mark.parametrize(("section", "message"), [
    ('kind = "cloud"', "[rehearsal]: kind must be one of scratch, local, hooks (got 'cloud')"),
    ('kind = "hooks"\ncreate_copy = "make-branch"', "[rehearsal]: kind 'hooks' needs both create_copy and "
                                                    "delete_copy commands"),
    ('kind = "local"\nbranch = "main"', "[rehearsal]: unknown key branch"),
])
def test_a_bad_rehearsal_section_is_one_line_and_exit_2(section: str, message: str, tmp_path: Path) -> None:
    config = _config(tmp_path, section)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config)
    done = subprocess.run([sys.executable, "-m", "migration_gate.cli", "rehearse", "--config", str(config),
                           "--against-copy"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.rehearsal
def test_a_dress_rehearsal_refuses_a_scratch_copy(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "migration_gate.cli", "rehearse", "--config",
                           str(_config(tmp_path, 'kind = "scratch"')), "--against-copy"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "'scratch' copy would be made and cut over on the target's own server" in \
        done.stderr and done.stderr.count("\n") == 1, done.stderr


def _config(folder: Path, rehearsal: str, hooks: dict[str, str] | None = None) -> Path:
    """migration.toml with another [rehearsal] (and [hooks] commands), its relative paths made absolute."""
    text = (ROOT / "migration.toml").read_text()
    text = re.sub(r'^(file|rollback_file) = "', lambda m: f'{m.group(1)} = "{ROOT}/', text, flags=re.M)
    text = text.replace('[rehearsal]\n', f'[rehearsal]\n{rehearsal}\n', 1).replace('\nkind = "scratch"\n', "\n", 1)
    for name, command in (hooks or {}).items():
        text = re.sub(rf"^{name} = .*$", lambda _m, n=name, c=command: f"{n} = {json.dumps(c)}", text, flags=re.M)
    path = folder / "migration.toml"
    path.write_text(text)
    return path


def test_a_dress_rehearsal_cuts_over_a_copy_and_never_touches_the_target(legacy_db: str, pg,
                                                                        tmp_path: Path) -> None:
    """The whole cut-over on a copy (the sandbox's hooks: a second embedded cluster) of a target given as
    DATABASE_URL: green, marked, and the target as it was. Once the copy is made the target refuses every new
    connection (tests/support/copy_probe.py), so any later session of the gate on it would have failed the run; the
    target's own maintenance and deploy hooks would leave a file behind."""
    called = tmp_path / "called"
    target_hooks = {name: f"touch {shlex.quote(str(called))}-{name}" for name in
                    ("maintenance_on", "maintenance_off", "deploy_new_schema", "deploy_legacy_schema")}
    probe = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m tests.support.copy_probe"
    rehearsal = (f'kind = "hooks"\ncreate_copy = {json.dumps(HOOKS["create_copy"] + " && " + probe)}\n'
                 f'delete_copy = {json.dumps(HOOKS["delete_copy"])}')
    config = _config(tmp_path, rehearsal, target_hooks)
    before = _state(legacy_db)
    env = {k: v for k, v in os.environ.items() if k not in (*TARGET_VARIABLES, "GATE_CONFIG", "GATE_REHEARSAL_KIND")}
    env.update({"DATABASE_URL": legacy_db, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "GATE_API_USERNAME": "demo_therapist1",
                "GATE_API_PASSWORD": "demo-password-1"})
    try:
        done = subprocess.run([sys.executable, "-m", "migration_gate.cli", "rehearse", "--config", str(config),
                               "--against-copy", "--json", "--quiet", "--reports", str(tmp_path / "reports")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        set_connections(legacy_db, allowed=True)
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["verdict"] == "green", (done.stderr[-3000:], summary)
    run_dir = Path(summary["run_dir"])
    state = json.loads((run_dir / "state.json").read_text())
    marker = state["dress_rehearsal"]
    assert marker["copy"].startswith("copy from hook create_copy: second embedded cluster (PostgreSQL ")
    assert marker["source"] == legacy_db.split("@", 1)[1] and marker["as_of"] and summary["dress_rehearsal"] == marker
    assert state["target"] != marker["source"]  # the cut-over's target is the copy
    assert all(p["seconds"] is not None for p in state["phases"])  # what the forecast reads
    html = (run_dir / "signoff.html").read_text()
    assert "DRESS REHEARSAL on a copy: copy from hook create_copy: second embedded cluster" in html
    assert "the app checks ran against the reference API" in html and "Rehearsal copy (PRE-08)" in html
    assert "Release manager" not in html  # nothing to approve
    assert not list(tmp_path.glob("called-*")), "a hook of the real target was called"
    assert _state(legacy_db) == before, "the target changed"
    assert _my_clusters(pg) == set(), "the copy was not removed"


def test_sigterm_in_the_middle_still_removes_the_copy(legacy_db: str, tmp_path: Path) -> None:
    """A rehearsal stopped by SIGTERM (its gate ending a suite, a CI cancel) unwinds like Ctrl-C: the local
    cluster it started is stopped and its folder deleted before the process ends."""
    ready = tmp_path / "ready"
    code = ("import sys, time\nfrom dataclasses import replace\nfrom pathlib import Path\n"
            "from migration_gate.rehearsal import copies\n"
            "from migration_gate.config import RehearsalConfig, load_config\n"
            "gate = replace(load_config(), rehearsal=RehearsalConfig(kind='local'))\n"
            "with copies.copy_of(sys.argv[1], gate) as copy:\n"
            "    Path(sys.argv[2]).write_text(copy.server_dsn)\n    time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", code, legacy_db, str(ready)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if ready.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), child.communicate()[1][-2000:]
        port = int(psycopg.conninfo.conninfo_to_dict(ready.read_text())["port"])
        assert not _port_closed(port)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert _port_closed(port), "the local cluster still serves after SIGTERM"
    assert not [f for f in DEFAULT_BASE.iterdir() if (f / OWNER_FILE).is_file()
                and (f / OWNER_FILE).read_text().strip() == str(child.pid)], "its folder is still there"


def test_a_failing_hook_that_echoes_the_dsn_it_was_given_never_shows_its_password() -> None:
    """GATE_COPY_SOURCE carries the target's password; a hook's error line (set -x, a verbose curl) is masked by
    the values the gate handed it, not only by the gate's own environment."""
    hooks = ShellHooks({"create_copy": 'echo "+ curl -d $GATE_COPY_SOURCE: s3cretPW-9 refused" >&2; exit 3'})
    with pytest.raises(GateError) as failed:
        hooks._run("create_copy", {"GATE_COPY_SOURCE": "postgresql://app:s3cretPW-9@db.example/app"})
    assert "s3cretPW-9" not in str(failed.value) and "refused" in str(failed.value), str(failed.value)
