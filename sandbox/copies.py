"""The sandbox's [rehearsal] hooks: a copy of the target in a second embedded cluster, as a team's hooks make a
Neon branch. `python -m sandbox.copies create` starts the cluster, copies the target (GATE_COPY_SOURCE) into it
with pg_dump | pg_restore and prints {"dsn", "as_of", "label"} as its last line; `... delete` stops the cluster
that serves GATE_COPY_DSN and removes its folder. Real processes: the gate's copies path is tested for real.

The cluster outlives the create command (the gate uses it afterwards), so it is handed to the gate's process
(GATE_COPY_OWNER_PID in its owner file): a gate that dies without calling delete leaves a cluster the next
embedded start sweeps away.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from migration_gate.backup.tools import split_password
from migration_gate.config import ConfigError, load_config
from migration_gate.core.redact import redact_text
from migration_gate.db.embedded import OWNER_FILE, EmbeddedError, EmbeddedPostgres, cluster_serving
from migration_gate.rehearsal.copies import DSN_ENV, OWNER_ENV, SOURCE_ENV, roles_granted
from sandbox.roles import create_app_role


def _copy(source: str, cluster: EmbeddedPostgres) -> str:
    """The source database into a database of the same name on the cluster (pg_dump | pg_restore, no file)."""
    name = psycopg.conninfo.conninfo_to_dict(source).get("dbname") or "postgres"
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dest = cluster.dsn(name)
    plain_source, env = split_password(source)
    plain_dest, dest_env = split_password(dest)
    tools = cluster.binaries
    dump = subprocess.Popen([tools.tool("pg_dump"), "-Fc", "-Z0", f"--dbname={plain_source}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | env)
    restore = subprocess.run([tools.tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={plain_dest}"],
                             stdin=dump.stdout, capture_output=True, text=True, env=dest_env)
    assert dump.stdout is not None
    dump.stdout.close()
    dumped = dump.wait()
    if dumped != 0 or restore.returncode != 0:
        errors = (dump.stderr.read().decode(errors="replace") if dump.stderr else "") + restore.stderr
        raise EmbeddedError(f"copying the target failed: {(errors.strip().splitlines() or ['?'])[-1]}")
    return dest


def create() -> int:
    source = os.environ.get(SOURCE_ENV)
    if not source:
        print(f"sandbox.copies create: {SOURCE_ENV} not set", file=sys.stderr)
        return 2
    gate = load_config()
    cluster = EmbeddedPostgres().start()
    try:
        if os.environ.get(OWNER_ENV):  # the gate owns it from now on; the sweep removes it once the gate is gone
            (cluster.dir / OWNER_FILE).write_text(os.environ[OWNER_ENV])
        if gate.app_role:
            create_app_role(cluster, gate.app_role)
        for role in roles_granted(source):
            cluster.create_role(role)
        as_of = datetime.now(UTC)
        dsn = _copy(source, cluster)
    except BaseException:
        cluster.stop()
        raise
    atexit.unregister(cluster.stop)  # it outlives this command
    print(json.dumps({"dsn": dsn, "as_of": as_of.isoformat(timespec="seconds"),
                      "label": f"second embedded cluster (PostgreSQL {cluster.binaries.major}, port {cluster.port})"}))
    return 0


def delete() -> int:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        print(f"sandbox.copies delete: {DSN_ENV} not set", file=sys.stderr)
        return 2
    port = int(psycopg.conninfo.conninfo_to_dict(dsn).get("port") or 5432)
    folder = cluster_serving(port)
    if folder is None:
        print(f"no sandbox copy cluster serves port {port} (already deleted)")
        return 0
    cluster = EmbeddedPostgres()
    cluster.dir, cluster.port = folder, port
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)
    print(f"deleted the sandbox copy cluster on port {port}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["create"], ["delete"]):
        print("usage: python -m sandbox.copies create|delete", file=sys.stderr)
        return 2
    try:
        return create() if argv == ["create"] else delete()
    except (ConfigError, EmbeddedError, psycopg.Error, OSError) as exc:
        print(f"sandbox.copies {argv[0]}: {redact_text(str(exc).splitlines()[0] if str(exc) else repr(exc))}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
