"""A throwaway PostgreSQL cluster for the sandbox and our tests.

Facts behind the choices (../shared/reference/embedded-postgres.md): initdb/pg_ctl refuse to run as root, so as
root they run as an unprivileged user that owns the cluster folders; sockets live in a short folder (107-byte
limit); the server listens on 127.0.0.1 on a free port; durability is off; a killed test run leaves its server
behind, so clusters of ours whose owning process is gone are swept at start-up.

Like a hosted PostgreSQL (Neon, RDS), the cluster hands out an owner role, not its superuser: ``dsn()`` connects
as ``OWNER_ROLE`` (LOGIN NOSUPERUSER CREATEDB NOCREATEROLE, as Neon's ``neondb_owner``), which creates and owns
the databases. The bootstrap superuser initdb needs is there for what a provider does for its customers
(creating roles): ``admin_dsn()``.

The cluster is closed to the other users of this machine: every role (the superuser, the owner, the roles
``create_role`` makes) logs in with SCRAM and a random password of its own, over TCP and the socket alike (the
socket sits in a 0700 folder besides). The passwords live in an owner-only passfile in the 0700 cluster folder
(libpq's format, so ``PGPASSFILE=<folder>/pgpass psql ...`` works on a kept cluster); ``dsn()`` carries the
password, so whatever it is handed to (the gate, the API, an app server) logs in, and printing a DSN goes through
``redact``. The base folder (``/tmp/mgpg-<uid>``) must be ours and writable by nobody else, and the sweep signals
a pid only when it is the postmaster of the folder being swept.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from migration_gate.core.errors import MigrationGateError
from migration_gate.db.binaries import PgBinaries, find_binaries

OWNER_FILE = "owner.pid"
OWNER_ROLE = "gate_owner"  # what a hosted PostgreSQL gives its customer: owns the databases, no superuser
KEEP_FILE = "keep"
PASSFILE = "pgpass"  # each role's password, libpq's passfile format, owner-only, in the 0700 cluster folder
# A folder without an owner file this young is one being started by a sibling process (mkdtemp, then the
# owner file): sweeping it removed a cluster under a parallel test worker's feet.
STARTING_GRACE_SECONDS = 120
DEFAULT_BASE = Path(tempfile.gettempdir()) / f"mgpg-{os.getuid()}"

SERVER_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "dynamic_shared_memory_type": "mmap",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "4GB",
    "shared_buffers": "256MB",
    "maintenance_work_mem": "512MB",
    "work_mem": "32MB",
    "max_connections": "60",
}


# Loaded when the binaries have it (contrib): the latency check names the statements a slow endpoint ran
# (migration_gate.db.statements). A database still needs CREATE EXTENSION (enable_statement_stats); never required.
STATEMENT_STATS = "pg_stat_statements"


class EmbeddedError(MigrationGateError, RuntimeError):
    """The embedded cluster could not be found, started or stopped; the message is one clear line."""


def free_port() -> int:
    """A port nobody listens on now on 127.0.0.1 (the OS picks it; callers retry on the rare race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account that runs the server when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in filter(None, (os.environ.get("MIGRATION_GATE_PG_USER"), "postgres", "nobody")):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedError("running as root and no unprivileged user (postgres, nobody) exists to run PostgreSQL")


def check_base(base: Path) -> None:
    """The cluster base folder is ours and nobody else may write in it; otherwise one clear line. Another user who
    made /tmp/mgpg-<uid> first (or can write in it) could plant folders the sweep deletes or a pid it signals."""
    try:
        info = base.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EmbeddedError(f"cluster base folder {base} is not a folder (a link or a file stands there): "
                            "remove it or set another base")
    if info.st_uid != os.geteuid():
        raise EmbeddedError(f"cluster base folder {base} belongs to uid {info.st_uid}, not to us (uid "
                            f"{os.geteuid()}): refusing to use it; remove it or set another base")
    if info.st_mode & 0o022:
        raise EmbeddedError(f"cluster base folder {base} is writable by others (mode {info.st_mode & 0o777:o}): "
                            "refusing to use it; chmod 711 it or remove it")


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is the postmaster serving `data_dir` (its command is postgres/postmaster and its -D argument
    or working folder is that data folder). Without /proc there is no telling: never."""
    proc = Path("/proc") / str(pid)
    try:
        args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    if not args or Path(args[0]).name not in ("postgres", "postmaster"):
        return False
    wanted = os.path.realpath(data_dir)
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-D"]
    if any(os.path.realpath(d) == wanted for d in given):
        return True
    try:
        return os.path.realpath(os.readlink(proc / "cwd")) == wanted
    except OSError:
        return False


def _scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for this password, made here so the password itself never
    reaches the server (nor its log). The passwords are ASCII, so SASLprep leaves them as they are."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client = hmac.new(salted, b"Client Key", "sha256").digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = [base64.b64encode(part).decode() for part in (salt, hashlib.sha256(client).digest(), server)]
    return f"SCRAM-SHA-256$4096:{b64[0]}${b64[1]}:{b64[2]}"


def _new_password() -> str:
    return secrets.token_urlsafe(24)  # URL-safe: goes into a postgresql:// DSN and a passfile as it is


def _pgpass_escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _read_passfile(path: Path) -> dict[str, str]:
    """role -> password from a passfile we wrote (fields split on unescaped colons)."""
    passwords: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            fields = [re.sub(r"\\(.)", r"\1", f) for f in re.split(r"(?<!\\):", line)]
            if len(fields) == 5:
                passwords[fields[3]] = fields[4]
    return passwords


def cluster_serving(port: int, base: Path = DEFAULT_BASE) -> Path | None:
    """The folder of our cluster listening on this port (postmaster.pid's fourth line)."""
    if not base.is_dir():
        return None
    for folder in base.iterdir():
        try:
            lines = (folder / "data" / "postmaster.pid").read_text().splitlines()
        except OSError:
            continue
        if len(lines) > 3 and lines[3].strip() == str(port):
            return folder
    return None


_PASSFILES: dict[int, Path] = {}  # port -> passfile, for the clusters this process started


def password_for(port: int, role: str, base: Path = DEFAULT_BASE) -> str | None:
    """The password of `role` on our cluster listening on this port (one this process started, or another of
    ours under `base`), or None when that is no cluster of ours or the role has none of ours."""
    passfile = _PASSFILES.get(port)
    if passfile is None or not passfile.is_file():
        folder = cluster_serving(port, base)
        passfile = folder / PASSFILE if folder else None
    return _read_passfile(passfile).get(role) if passfile else None


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return True  # already gone: nothing to sweep


def sweep_stale(base: Path = DEFAULT_BASE) -> list[Path]:
    """Stop and delete clusters of ours whose owning process is gone (not those kept on purpose)."""
    swept: list[Path] = []
    if not base.is_dir():
        return swept
    check_base(base)
    for cluster_dir in base.iterdir():
        if (cluster_dir / KEEP_FILE).exists():
            continue
        try:
            owner = int((cluster_dir / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            owner = None
        if owner is not None and pid_alive(owner):
            continue
        if owner is None and _younger_than(cluster_dir, STARTING_GRACE_SECONDS):
            continue  # another process made it a moment ago and has not written its owner file yet
        server = _postmaster_pid(cluster_dir / "data")
        if server and pid_alive(server) and _is_postmaster_of(server, cluster_dir / "data"):
            with contextlib.suppress(OSError):
                os.kill(server, signal.SIGQUIT)
            for _ in range(50):
                if not pid_alive(server):
                    break
                time.sleep(0.1)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        swept.append(cluster_dir)
    return swept


def kept_clusters(base: Path = DEFAULT_BASE) -> list[KeptCluster]:
    """The clusters kept with keep(), each with the checkout that kept it (unknown for an older marker)."""
    if not base.is_dir():
        return []
    return sorted((KeptCluster.read(marker) for marker in base.glob(f"*/{KEEP_FILE}")), key=lambda k: k.folder.name)


def stop_kept(base: Path = DEFAULT_BASE, owner: str | None = None, name: str | None = None) -> list[Path]:
    """Stop and delete kept clusters, and the processes kept with them: those kept by `owner` (a checkout's
    path), or the one `name` names (its folder's name or path, or its port); every kept one when neither is
    given. Another checkout's kept clusters are left alone, so one user's two checkouts do not stop each other's."""
    chosen = [k for k in kept_clusters(base)
              if (name is not None and k.named(name)) or (name is None and (owner is None or k.owner == owner))]
    for kept in chosen:
        for pid in kept.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        kept.marker.unlink(missing_ok=True)
    swept = sweep_stale(base)
    return [k.folder for k in chosen if k.folder in swept]


@dataclass(frozen=True)
class KeptCluster:
    """A kept cluster's marker: the companion pids to stop with it, the checkout that kept it and its port."""

    folder: Path
    pids: tuple[int, ...] = ()
    owner: str | None = None
    port: int | None = None

    @property
    def marker(self) -> Path:
        return self.folder / KEEP_FILE

    @classmethod
    def read(cls, marker: Path) -> KeptCluster:
        text = marker.read_text() if marker.is_file() else ""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):  # an older marker: companion pids, one per line (one alone reads as JSON)
            return cls(marker.parent, tuple(int(p) for p in text.split() if p.isdigit()))
        pids = tuple(p for p in data.get("pids", ()) if isinstance(p, int))
        port = data.get("port") if isinstance(data.get("port"), int) else None
        owner = data.get("owner") if isinstance(data.get("owner"), str) else None
        return cls(marker.parent, pids, owner, port)

    def named(self, name: str) -> bool:
        """Whether `name` (a folder name or path, or a port number) names this cluster."""
        if name.isdigit():
            return self.port == int(name)
        return name in (self.folder.name, str(self.folder))


class EmbeddedPostgres:
    """One throwaway cluster: ``with EmbeddedPostgres() as pg: psycopg.connect(pg.dsn())``."""

    user = "postgres"  # the bootstrap superuser: initdb needs it; only admin_dsn() connects as it
    owner = OWNER_ROLE
    host = "127.0.0.1"

    def __init__(self, binaries: PgBinaries | None = None, base: Path = DEFAULT_BASE,
                 settings: dict[str, str] | None = None) -> None:
        self.binaries = binaries or find_binaries()
        self.settings = dict(settings or {})  # server settings over SERVER_SETTINGS (a test's ssl = on, its files)
        self.base = base
        self.port: int | None = None
        self.dir: Path | None = None
        self.statement_stats = False  # pg_stat_statements loaded (set at start)
        self._account = _run_as()
        self._passwords: dict[str, str] = {}  # role -> password, also in the passfile

    # -- paths
    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "s"

    @property
    def log_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    @property
    def passfile(self) -> Path:
        """Every role's password in libpq's passfile format (owner-only): PGPASSFILE for a kept cluster."""
        assert self.dir is not None
        return self.dir / PASSFILE

    def _record(self, role: str, password: str) -> str:
        """Keep `role`'s password, in memory and in the passfile (the folder is 0700, the file 0600)."""
        self._passwords[role] = password
        lines = "".join(f"*:*:*:{_pgpass_escape(name)}:{secret}\n" for name, secret in self._passwords.items())
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(lines)
        return password

    def password(self, role: str) -> str | None:
        """The password of a role this cluster made (None for a role made otherwise)."""
        return self._passwords.get(role)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """Connect as the owner role (or as `user`): what the gate, the suites and our tests run as. The DSN
        carries the role's password: show it only through redact."""
        if self.port is None:
            raise EmbeddedError("the embedded cluster is not running")
        role = user or self.owner
        password = self._passwords.get(role)
        auth = f"{role}:{password}" if password else role
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def _admin_conninfo(self, dbname: str = "postgres") -> tuple[str, dict[str, str]]:
        """The superuser's DSN without its password, and the environment that carries it (never on argv)."""
        return (f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}",
                {"PGPASSWORD": self._passwords.get(self.user, "")})

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """The bootstrap superuser: only for what a provider does, creating roles."""
        return self.dsn(dbname, self.user)

    def create_role(self, name: str, createdb: bool = False, member_of: tuple[str, ...] = ()) -> str:
        """A LOGIN NOSUPERUSER NOCREATEROLE role (CREATEDB if asked), unless it exists; then membership in
        `member_of`. As the superuser, through psql (this module needs no driver): names go in as psql variables,
        quoted as identifiers by psql itself (:"name"), never pasted into the SQL."""
        attributes = "LOGIN NOSUPERUSER NOCREATEROLE " + ("CREATEDB" if createdb else "NOCREATEDB")
        script = ("SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS missing \\gset\n"
                  f"\\if :missing\nCREATE ROLE :\"role\" {attributes} PASSWORD :'verifier';\n\\endif\n"
                  "\\echo :missing\n")
        known = self._passwords.get(name)
        password = known or _new_password()
        variables = ["-v", f"role={name}", "-v", f"verifier={_scram_verifier(password)}"]
        for i, group in enumerate(member_of):
            script += f'GRANT :"group{i}" TO :"role";\n'
            variables += ["-v", f"group{i}={group}"]
        admin, secret = self._admin_conninfo()
        done = self._run([self.binaries.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *variables,
                          "-d", admin, "-f", "-"], stdin=script, env=secret)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"psql exited {done.returncode}"
            raise EmbeddedError(f"creating role {name} failed: {last}")
        if known is None and done.stdout.strip().splitlines()[:1] == ["t"]:
            self._record(name, password)  # a role made otherwise keeps its own password: none of ours is recorded
        return name

    def enable_statement_stats(self, dbname: str) -> bool:
        """CREATE EXTENSION pg_stat_statements in this database and let the owner role read every role's entries
        (pg_read_all_stats), as a provider that offers the extension does; False (nothing done) when the server has
        not loaded it. Only on request: a database carrying it dumps a CREATE EXTENSION the owner cannot replay."""
        if not self.statement_stats:
            return False
        script = ('CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n'
                  'GRANT pg_read_all_stats TO :"role";\n')
        admin, secret = self._admin_conninfo(dbname)
        done = self._run([self.binaries.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"role={self.owner}",
                          "-d", admin, "-f", "-"], stdin=script, env=secret)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"psql exited {done.returncode}"
            raise EmbeddedError(f"enabling {STATEMENT_STATS} in {dbname} failed: {last}")
        return True

    # -- lifecycle
    def _run(self, args: list[str], stdin: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {"capture_output": True, "text": True, "cwd": str(self.dir), "input": stdin}
        if self._account is not None:
            kwargs.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        child = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | (env or {})
        child["LC_ALL"] = "C.UTF-8"
        child["LANG"] = "C.UTF-8"
        return subprocess.run(args, env=child, **kwargs)

    def start(self) -> EmbeddedPostgres:
        sweep_stale(self.base)
        self.base.mkdir(mode=0o711, parents=True, exist_ok=True)
        check_base(self.base)
        os.chmod(self.base, 0o711)
        if self._account is not None:
            for folder in self.base.resolve().parents:
                if not folder.stat().st_mode & 0o001:
                    raise EmbeddedError(f"user {self._account.pw_name} cannot enter {folder}: "
                                        "put the cluster base folder where it can (default: under /tmp)")
        self.dir = Path(tempfile.mkdtemp(prefix="c", dir=self.base))
        (self.dir / OWNER_FILE).write_text(str(os.getpid()))
        self.socket_dir.mkdir(mode=0o700)
        os.chmod(self.socket_dir, 0o700)
        os.chmod(self.dir, 0o700)
        self._passwords = {}
        pwfile = self.dir / "pwfile"  # initdb's superuser password; the server's account reads it, then it goes
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._record(self.user, _new_password()) + "\n")
        if self._account is not None:
            for path in (self.dir, self.socket_dir, pwfile):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        init = self._run([
            self.binaries.tool("initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
        ])
        pwfile.unlink(missing_ok=True)
        if init.returncode != 0:
            self._discard()
            raise EmbeddedError(f"initdb failed: {init.stderr.strip().splitlines()[-1] if init.stderr else ''}")
        preload = {"shared_preload_libraries": STATEMENT_STATS} if self.binaries.has_library(STATEMENT_STATS) else {}
        self.statement_stats = bool(preload)
        settings = " ".join(f"-c {k}={v}" for k, v in (SERVER_SETTINGS | preload | self.settings).items())
        for _attempt in range(3):
            self.port = free_port()
            opts = f"-p {self.port} -k {self.socket_dir} -h 127.0.0.1 {settings}"
            started = self._run([
                self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
                "-l", str(self.log_file), "-o", opts, "start",
            ])
            if started.returncode == 0:
                atexit.register(self.stop)
                _PASSFILES[self.port] = self.passfile
                self.create_role(self.owner, createdb=True)
                return self
        tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] if self.log_file.exists() else []
        self._discard()
        raise EmbeddedError(f"PostgreSQL did not start: {' '.join(tail) or started.stderr.strip()}")

    def keep(self, companion_pids: tuple[int, ...] = (), owner: str | None = None) -> None:
        """Leave the cluster running after this process ends (for inspection); the sweep spares it until
        stop_kept() is called. companion_pids (e.g. the API) are stopped with it; `owner` (the checkout that
        kept it) lets stop_kept() stop only that checkout's clusters."""
        if self.dir is not None:
            record = {"pids": list(companion_pids), "owner": owner, "port": self.port}
            (self.dir / KEEP_FILE).write_text(json.dumps(record) + "\n")
            atexit.unregister(self.stop)

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.data_dir.exists() and _postmaster_pid(self.data_dir):
            stopped = self._run([self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"])
            if stopped.returncode != 0:
                server = _postmaster_pid(self.data_dir)
                if server and _is_postmaster_of(server, self.data_dir):
                    with contextlib.suppress(OSError):
                        os.kill(server, signal.SIGQUIT)
        self._discard()
        atexit.unregister(self.stop)

    def _discard(self) -> None:
        if self.port is not None:
            _PASSFILES.pop(self.port, None)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self.port = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
