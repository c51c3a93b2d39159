"""The rehearsal, the project's main job: the whole cut-over on the embedded sandbox.

Starts a throwaway PostgreSQL, seeds the legacy database with synthetic PHI, starts the reference API on the
legacy schema, then runs the same gated cut-over a production migration day runs (migration_gate.run.gate), with
the sandbox's own hooks for maintenance mode and deploys. The sandbox comes from the configured provider
(migration_gate.run.provider), never imported by name. Ends with the verdict and the sign-off report.
Exit codes are those of scripts/cutover (see --help).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from migration_gate.app.hooks import CutoverTarget
from migration_gate.backup.tools import split_password
from migration_gate.config import ConfigError, GateConfig, load_environment
from migration_gate.config.environment import operator
from migration_gate.core import rundir
from migration_gate.core.errors import GateError, Refused
from migration_gate.core.paths import ROOT
from migration_gate.core.progress import Progress
from migration_gate.core.provenance import gate_version
from migration_gate.core.redact import describe_target, error_line, safe_message
from migration_gate.core.status import Exit
from migration_gate.db.embedded import PASSFILE, EmbeddedError, cluster_serving, kept_clusters, stop_kept
from migration_gate.rehearsal import copies
from migration_gate.report.verdict import finish_run
from migration_gate.run import attest
from migration_gate.run.gate import Gate
from migration_gate.run.provider import SandboxProvider
from migration_gate.watch.rounds import Watch, summary

ALL_OF_THIS_CHECKOUT = ""  # --stop-kept without a CLUSTER


def rehearse(args: argparse.Namespace, gate: GateConfig, provider: SandboxProvider, progress: Progress) -> int:
    """The cut-over on a fresh embedded sandbox (a team's own app on the side [rehearsal] names)."""
    run_dir = args.reports / f"rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    sandbox = provider.rehearsal(run_dir / rundir.SANDBOX, args.patients, args.seed, progress)
    state = None
    try:
        _use_apps(sandbox, gate, provider.key)
        sandbox.start()
        target = CutoverTarget(dsn=sandbox.dsn, key=provider.key, api_base_url=sandbox.api_base_url,
                               api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                               hooks=sandbox.hooks, app_log_file=sandbox.app_log_file,
                               api_headers=sandbox.api_headers, allow_writes=True, synthetic=True, **_edge(sandbox))
        # the checklist's human items, attested by whoever rehearses (as the sandbox operator): nobody to brief
        attest.record_all(gate, run_dir, by=f"sandbox operator ({operator()})", note="recorded by scripts/rehearse")
        state = Gate(gate, target, run_dir, progress, log_source=getattr(sandbox, "log_source", None)).run()
        environment = {"Target": "embedded sandbox (throwaway PostgreSQL, synthetic PHI)",
                       "Patients seeded": f"{args.patients:,} (seed {args.seed})", "API": _apps_line(sandbox),
                       "Configuration": str(gate.path), "Run by": operator(), "Gate version": gate_version()}
        code = finish_run(args, gate, state, environment, sandbox=True)
        _say_apps(args, sandbox)
        _show_status_updates(args, getattr(sandbox.hooks, "notify_file", None))
        if args.watch and code == 0:
            code = _watch(gate, target, run_dir, progress, args, getattr(sandbox, "log_source", None))
        if args.keep and not args.json:
            port = psycopg.conninfo.conninfo_to_dict(sandbox.dsn).get("port")
            folder = cluster_serving(int(port)) if str(port).isdigit() else None
            login = f"PGPASSFILE={folder / PASSFILE} " if folder else ""  # the password stays in that 0600 file
            print(f"Kept running: {login}psql '{split_password(sandbox.dsn)[0]}'  "
                  f"API {sandbox.api_base_url} (pid {sandbox.api_pid})\n"
                  f"  stop and delete with: scripts/rehearse --stop-kept {port}  (or --stop-kept: every cluster "
                  "this checkout kept)"
                  + ("\n  your app ([rehearsal] app_new / app_legacy) was stopped: start it yourself against that "
                     "database" if _team_apps(gate) else ""))
        return code
    except Refused as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return Exit.REFUSED
    except (EmbeddedError, RuntimeError, OSError, psycopg.Error) as exc:
        message = safe_message(exc)
        print(f"rehearse: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"verdict": "error", "error": message, "exit_code": Exit.RED}))
        return Exit.RED
    finally:
        sandbox.stop(keep=args.keep)


def stop_kept_runs(name: str) -> int:
    """--stop-kept: this checkout's kept clusters, or the one named; the others are listed, never stopped."""
    if name == ALL_OF_THIS_CHECKOUT:
        stopped = stop_kept(owner=str(ROOT))
    else:
        stopped = stop_kept(name=name)
        if not stopped:
            print(f"rehearse: --stop-kept {name}: no kept cluster has that folder or port "
                  f"(kept: {', '.join(_kept_names()) or 'none'})", file=sys.stderr)
            return Exit.USAGE
    print(f"stopped {len(stopped)} kept sandbox cluster(s)" + "".join(f"\n  {p.name}" for p in stopped))
    others = _kept_names()
    if others:
        print(f"left running (kept by another checkout, or stop it by name): {', '.join(others)}")
    return Exit.GREEN


def _kept_names() -> list[str]:
    return [f"{k.folder.name} (port {k.port or 'unknown'}, kept by {k.owner or 'an unknown checkout'})"
            for k in kept_clusters()]


def dress_rehearsal(args: argparse.Namespace, gate: GateConfig, provider: SandboxProvider,
                    progress: Progress) -> int:
    """The whole cut-over on a copy of the real target (or of a fresh sandbox), never on the target itself."""
    kind = args.copy_kind or gate.rehearsal.kind
    if kind == "scratch":
        print("rehearse: --against-copy needs [rehearsal] kind 'local' or 'hooks' (or --copy-kind): a 'scratch' "
              "copy would be made and cut over on the target's own server", file=sys.stderr)
        return Exit.USAGE
    try:
        env = load_environment()
    except ConfigError as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return Exit.USAGE
    if env.database_url and not env.phi_key:
        print("rehearse: --against-copy of DATABASE_URL needs PHI_ENCRYPTION_KEY", file=sys.stderr)
        return Exit.USAGE
    run_dir = args.reports / f"dress-rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    state = None
    with contextlib.ExitStack() as stack:
        try:
            if env.database_url:  # the real target: its data is real, its reports are not the sandbox's
                source_dsn, key, from_sandbox = env.database_url, env.phi_key or "", False
                username = env.api_username or gate.sandbox_username
                password = env.api_password or gate.sandbox_password
            else:
                source = provider.rehearsal(run_dir / "source", args.patients, args.seed, progress)
                stack.callback(source.stop)
                source.start()
                source_dsn, key, from_sandbox = source.dsn, provider.key, True
                username, password = gate.sandbox_username, gate.sandbox_password
            copy_gate = _copy_config(gate, kind, provider if from_sandbox else None)
            progress.say(f"making a {kind} copy of {describe_target(source_dsn)}")
            copy = stack.enter_context(copies.copy_of(source_dsn, copy_gate, kind=kind, dump_copy=False))
            progress.say(f"cutting over the copy: {copy.label}, data as of {copy.as_of:%H:%M:%S} UTC")
            app_on = getattr(provider, "app_on", None)
            if app_on is None:
                raise Refused(f"the sandbox provider {gate.sandbox_provider} cannot start the reference API on a "
                              "copy (it has no app_on)")
            app = app_on(copy.before_dsn, run_dir / "copy-app", progress)
            stack.callback(app.stop)
            _use_apps(app, gate, key)
            app.start()
            # PRE-08 rehearses on the copy's own server: the suites get [rehearsal] kind "scratch" in their context
            suites_gate = dataclasses.replace(gate, rehearsal=dataclasses.replace(gate.rehearsal, kind="scratch"))
            target = CutoverTarget(dsn=copy.before_dsn, key=key, api_base_url=app.api_base_url,
                                   api_username=username, api_password=password, hooks=app.hooks,
                                   app_log_file=app.app_log_file, api_headers=app.api_headers, allow_writes=True,
                                   synthetic=from_sandbox, **_edge(app))
            attest.record_all(gate, run_dir, by=f"dress rehearsal ({operator()})",
                              note="recorded by scripts/rehearse --against-copy")
            cutover = Gate(suites_gate, target, run_dir, progress, log_source=getattr(app, "log_source", None))
            cutover.state.dress_rehearsal = copy.record(source_dsn)
            state = cutover.run()
            environment = {
                "Target": f"DRESS REHEARSAL on a copy of {describe_target(source_dsn)}"
                          + (" (a fresh sandbox, synthetic PHI)" if from_sandbox else ""),
                "Copy": f"{copy.label}; data as of {copy.as_of.isoformat(timespec='seconds')}",
                "API": (f"{_apps_line(app)}, started on the copy" if _team_apps(gate) else
                        "the reference API (sandbox provider) started on the copy: the app checks ran against the "
                        "reference API, not your app ([rehearsal] app_new starts yours)"),
                "Configuration": str(gate.path), "Run by": operator(), "Gate version": gate_version()}
            code = finish_run(args, gate, state, environment, sandbox=from_sandbox)
            _say_apps(args, app)
            return code
        except Refused as exc:
            print(f"rehearse: {exc}", file=sys.stderr)
            return Exit.REFUSED
        except (copies.CopyError, GateError, EmbeddedError, RuntimeError, OSError, psycopg.Error) as exc:
            message = error_line(exc) if isinstance(exc, copies.CopyError) else safe_message(exc)
            print(f"rehearse: {message}", file=sys.stderr)
            if args.json:
                print(json.dumps({"verdict": "error", "error": message, "exit_code": Exit.RED}))
            return Exit.RED


def _team_apps(gate: GateConfig) -> bool:
    return gate.rehearsal.app_new is not None or gate.rehearsal.app_legacy is not None


def _use_apps(rehearsal: object, gate: GateConfig, key: str) -> None:
    """[rehearsal] app_new / app_legacy handed to the provider's target before it starts (with the key the gate
    uses); a provider that cannot start a team's app is refused rather than silently rehearsing its own."""
    if not _team_apps(gate):
        return
    use = getattr(rehearsal, "use_apps", None)
    if use is None:
        raise Refused(f"the sandbox provider {gate.sandbox_provider} cannot start your app ([rehearsal] app_new / "
                      "app_legacy): it has no use_apps")
    use(gate.rehearsal, key, gate.logs.error_pattern)


def _edge(rehearsal: object) -> dict:
    """What the target learns from a rehearsal serving a team's app: the headers every request needs to reach it,
    and why maintenance mode cannot be seen on it (CutoverTarget edge_headers, maintenance_unverifiable)."""
    return {"edge_headers": dict(getattr(rehearsal, "edge_headers", {}) or {}),
            "maintenance_unverifiable": getattr(rehearsal, "maintenance_unverifiable", None)}


def _apps_line(rehearsal: object) -> str:
    """Which app answered on each side, for the sign-off's Environment table."""
    label = getattr(rehearsal, "app_label", None)
    if label is None:
        return "the sandbox provider's reference API"
    legacy, new = label(False), label(True)
    return legacy if legacy == new else f"legacy side: {legacy}; new side: {new}"


def _say_apps(args: argparse.Namespace, rehearsal: object) -> None:
    label = getattr(rehearsal, "app_label", None)
    if label is not None and not args.json:
        print(f"App on the legacy side: {label(False)}\nApp on the new side: {label(True)}")


def _copy_config(gate: GateConfig, kind: str, provider: SandboxProvider | None) -> GateConfig:
    """The description with the copy's kind; on the sandbox, the sandbox's own copy hooks where none are set."""
    rehearsal = dataclasses.replace(gate.rehearsal, kind=kind)
    if kind == "hooks" and not (rehearsal.create_copy and rehearsal.delete_copy):
        hooks = getattr(provider, "copy_hooks", None)
        if hooks is None:
            raise Refused("--copy-kind hooks needs [rehearsal] create_copy and delete_copy")
        rehearsal = dataclasses.replace(rehearsal, **hooks(gate.path))
    return dataclasses.replace(gate, rehearsal=rehearsal)


def _show_status_updates(args: argparse.Namespace, path: Path | None) -> None:
    """Where the sandbox's notify hook wrote the run's status lines, and the lines (what a channel would get)."""
    if args.json or path is None:
        return
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    print(f"Status updates (the sandbox's notify hook, {len(lines)} lines): {path}")
    for line in lines:
        print(f"  {line}")


def _watch(gate, target: CutoverTarget, run_dir: Path, progress: Progress, args: argparse.Namespace,
           log_source) -> int:
    """The 48 hours after go-live, compressed: every round of the schedule against the sandbox, as scripts/watch
    runs them against a real target."""
    began = time.monotonic()
    watch = Watch(gate, target, run_dir, progress, factor=args.watch_factor, sandbox=True, log_source=log_source)
    code = watch.run_rounds()
    seconds = time.monotonic() - began
    if args.json:
        print(json.dumps(summary(watch, code) | {"seconds": round(seconds, 1)}, indent=2))
    else:
        red = sum(r.verdict == "red" for r in watch.state.rounds)
        print(f"Watch: {len(watch.state.rounds)} of {watch.state.total} rounds in {seconds:.0f} s "
              f"({args.watch_factor:g} times real time), {red} red; exit {code}\n"
              f"Watch report: {watch.folder / rundir.WATCH_REPORT}")
    return code

