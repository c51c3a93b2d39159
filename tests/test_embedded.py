"""The embedded cluster: starts as root and as an ordinary user, listens on 127.0.0.1 only, cleans up after
itself, and sweeps clusters left behind by a killed run."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migration_gate.db.binaries import find_binaries
from migration_gate.db.embedded import (
    OWNER_FILE,
    EmbeddedError,
    EmbeddedPostgres,
    KeptCluster,
    kept_clusters,
    stop_kept,
    sweep_stale,
)

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_runs_on_loopback_with_durability_off(pg: EmbeddedPostgres) -> None:
    with psycopg.connect(pg.dsn()) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'fsync', "
            "'synchronous_commit', 'full_page_writes')").fetchall())
    assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off", "synchronous_commit": "off",
                        "full_page_writes": "off"}
    assert len(str(pg.socket_dir)) < 60, "socket folder must stay short (107-byte socket path limit)"


def _psql_without_password(pg: EmbeddedPostgres, role: str) -> subprocess.CompletedProcess[str]:
    """psql over TCP as `role` with no password (-w: never prompt), run as another local user when we are root
    (uid 65534), with no passfile or PG* variable to lean on."""
    other = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "PGPASSFILE": "/nonexistent", "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run([pg.binaries.tool("psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(pg.port), "-U", role,
                           "-d", "postgres", "-Atc", "SELECT current_user"],
                          capture_output=True, text=True, timeout=30, cwd="/", env=env, **other)


def test_another_local_user_cannot_log_in_without_a_password_and_the_folders_are_private(pg: EmbeddedPostgres
                                                                                         ) -> None:
    """Issue 20 item 1: initdb --auth=trust let any local user in over 127.0.0.1 as the superuser."""
    for role in (pg.user, pg.owner):
        done = _psql_without_password(pg, role)
        assert done.returncode != 0 and done.stdout.strip() != role, f"{role} logged in without a password"
        assert "password" in done.stderr, done.stderr
    for folder in (pg.dir, pg.socket_dir):
        assert folder.stat().st_mode & 0o777 == 0o700, f"{folder} is {folder.stat().st_mode & 0o777:o}"
    assert pg.passfile.stat().st_mode & 0o777 == 0o600
    with psycopg.connect(pg.admin_dsn()) as conn:  # the password the cluster hands out is what lets us in
        assert conn.execute("SELECT current_user").fetchone() == (pg.user,)


@pytest.fixture
def base() -> Iterator[Path]:
    """A cluster base folder of this test's own, where the server's account can enter (tmp_path is private)."""
    folder = Path(tempfile.mkdtemp(prefix="mgpg-test-"))
    os.chmod(folder, 0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.cluster
def test_stop_deletes_the_cluster(base: Path) -> None:
    cluster = EmbeddedPostgres(base=base).start()
    folder, admin = cluster.dir, cluster.admin_dsn()
    with psycopg.connect(cluster.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    cluster.stop()
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(admin, connect_timeout=2)


def test_sweep_removes_a_cluster_whose_owner_was_killed(base: Path) -> None:
    code = ("import sys, os, time; from pathlib import Path; from migration_gate.db.embedded import EmbeddedPostgres;"
            f"c = EmbeddedPostgres(base=Path({str(base)!r})).start(); print(c.dir, flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    folder = Path(child.stdout.readline().strip())
    server_pid = int((folder / "data" / "postmaster.pid").read_text().splitlines()[0])
    child.send_signal(signal.SIGKILL)
    child.wait()
    os.kill(server_pid, 0)  # the server outlived its owner, as after a killed test run
    swept = sweep_stale(base)
    assert folder in swept and not folder.exists()
    for _ in range(50):
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the stale server is still running after the sweep")


def test_sweep_spares_live_and_kept_clusters(tmp_path: Path) -> None:
    base = tmp_path / "base"
    live, kept = base / "live", base / "kept"
    live.mkdir(parents=True)
    kept.mkdir()
    (live / OWNER_FILE).write_text(str(os.getpid()))
    (kept / OWNER_FILE).write_text("999999999")
    (kept / "keep").write_text("kept")
    assert sweep_stale(base) == []
    assert live.exists() and kept.exists()


def test_sweep_spares_a_folder_a_sibling_is_starting_and_sweeps_it_once_abandoned(tmp_path: Path) -> None:
    """Between mkdtemp and the owner file a parallel test worker's sweep once removed a starting cluster."""
    base = tmp_path / "base"
    starting = base / "starting"
    starting.mkdir(parents=True)
    assert sweep_stale(base) == [] and starting.exists()
    old = time.time() - 3600
    os.utime(starting, (old, old))
    assert sweep_stale(base) == [starting] and not starting.exists()


def test_the_sweep_never_signals_a_process_a_planted_postmaster_pid_names(tmp_path: Path) -> None:
    """Issue 20 item 8: a postmaster.pid naming an unrelated process made the sweep SIGQUIT it."""
    base = tmp_path / "base"
    planted = base / "cplanted"
    (planted / "data").mkdir(parents=True)
    (planted / OWNER_FILE).write_text("999999999")  # its owner is gone
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (planted / "data" / "postmaster.pid").write_text(f"{bystander.pid}\n{planted / 'data'}\n0\n5432\n")
        assert sweep_stale(base) == [planted] and not planted.exists()
        time.sleep(0.3)
        assert bystander.poll() is None, "the sweep signalled a process that is no postmaster of that folder"
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.cluster
def test_a_base_folder_others_may_write_in_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    base.chmod(0o777)
    for attempt in (lambda: sweep_stale(base), lambda: EmbeddedPostgres(base=base).start()):
        with pytest.raises(EmbeddedError, match=r"cluster base folder .*base is writable by others \(mode 777\)"):
            attempt()
    assert list(base.iterdir()) == []


@pytest.mark.cluster
@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another uid needs root")
def test_a_base_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir(mode=0o711)
    os.chown(base, 65534, 65534)
    with pytest.raises(EmbeddedError, match=r"cluster base folder .*base belongs to uid 65534, not to us"):
        EmbeddedPostgres(base=base).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="the ordinary-user path is the one this run already takes")
def test_starts_when_run_by_an_ordinary_user(base: Path) -> None:
    """As root the launcher runs initdb as postgres; here an unprivileged user drives the launcher itself.
    The launcher needs only the standard library, the tools' finder (db/binaries.py) and the errors' root
    (core/errors.py), so the user gets a world-readable copy of those (the checkout, and the virtualenv in it, may
    be private to root)."""
    account = pwd.getpwnam("postgres") if _has("postgres") else pwd.getpwnam("nobody")
    package = base / "code" / "migration_gate"
    (package / "db").mkdir(parents=True)
    (package / "core").mkdir()
    for name in ("__init__.py", "db/__init__.py", "db/embedded.py", "db/binaries.py", "core/__init__.py",
                 "core/errors.py"):
        shutil.copy(ROOT / "migration_gate" / name, package / name)
    for folder in (base / "code", package, package / "db", package / "core"):
        folder.chmod(0o755)
    code = ("import subprocess\nfrom migration_gate.db.embedded import EmbeddedPostgres\n"
            "with EmbeddedPostgres() as pg:\n"
            "    print(subprocess.run([pg.binaries.tool('psql'), '-XAtc', 'SELECT current_user', pg.dsn()],\n"
            "                         capture_output=True, text=True, check=True).stdout.strip())\n")
    python = _interpreter_for_others()
    if python is None:
        pytest.skip("no Python interpreter of this version that an unprivileged user may run")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd="/", user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                          env={"PATH": os.environ["PATH"], "HOME": "/tmp", "PYTHONPATH": str(base / "code")})
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "gate_owner"  # the owner role it hands out, not its superuser


def test_binaries_include_dump_and_restore() -> None:
    binaries = find_binaries()
    assert binaries.major >= 15
    for tool in ("pg_dump", "pg_restore"):
        assert Path(binaries.tool(tool)).is_file()


def _has(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _interpreter_for_others() -> str | None:
    """sys.executable if others may run it (it often lives under a private /root), else the system twin."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        path = Path(candidate)
        if path.is_file() and all(p.stat().st_mode & 0o001 for p in path.parents):
            return str(path)
    return None


@pytest.mark.cluster
def test_a_kept_cluster_survives_the_sweep_until_stop_kept(base: Path) -> None:
    companion = subprocess.Popen(["sleep", "300"])
    cluster = EmbeddedPostgres(base=base).start()
    folder, dsn = cluster.dir, cluster.dsn()
    cluster.keep(companion_pids=(companion.pid,), owner="/checkouts/one")
    (folder / OWNER_FILE).write_text("999999999")  # as if the process that kept it had exited
    assert sweep_stale(base) == []
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert stop_kept(base, owner="/checkouts/one") == [folder]
    assert not folder.exists()
    assert companion.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.cluster
def test_stop_kept_stops_only_this_checkouts_clusters_or_the_one_named(base: Path) -> None:
    ours, theirs = EmbeddedPostgres(base=base).start(), EmbeddedPostgres(base=base).start()
    ours.keep(owner="/checkouts/ours")
    theirs.keep(owner="/checkouts/theirs")
    ours_dir, theirs_dir, theirs_port = ours.dir, theirs.dir, theirs.port
    for folder in (ours_dir, theirs_dir):
        (folder / OWNER_FILE).write_text("999999999")  # as if the processes that kept them had exited
    assert {k.folder: k.owner for k in kept_clusters(base)} == {ours_dir: "/checkouts/ours",
                                                                theirs_dir: "/checkouts/theirs"}
    assert stop_kept(base, owner="/checkouts/ours") == [ours_dir]
    assert theirs_dir.exists() and not ours_dir.exists()
    with psycopg.connect(theirs.dsn()) as conn:  # still serving
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert stop_kept(base, name="1") == []  # a port nobody kept: nothing stopped
    assert stop_kept(base, name=str(theirs_port)) == [theirs_dir]
    assert not theirs_dir.exists()


def test_a_marker_kept_by_an_older_version_still_names_its_companions(base: Path) -> None:
    folder = base / "old"
    folder.mkdir(parents=True)
    (folder / "keep").write_text("4242\n")
    assert KeptCluster.read(folder / "keep") == KeptCluster(folder, (4242,))
