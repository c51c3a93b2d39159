"""The checklist's human items ([[people]] in migration.toml): who attested what and when, kept beside the run.

An attestation is one JSON line: the item's id, who attests (`by`), when (UTC), an optional note and, for the
decision-maker item, the name of the rollback decision maker. Never PHI: free text is one line, secrets redacted,
and text shaped like an email address, a phone number or an SSN is refused.

Where it goes: the target's cut-over run still in progress or unfinished (an item only needed after the cut-over:
the target's latest run), else `reports/pending-attestations.jsonl`, which the next cut-over of that target takes
into its run before it starts. So items attested the day before count. The run's file is `attestations.jsonl`
(append-only, apart from state.json, so attesting never races a running cut-over's state).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.config import ConfigError, GateConfig, PeopleItem
from migration_gate.config.environment import variable
from migration_gate.core.redact import describe_target, one_line, redact_text
from migration_gate.run.runstate import recorded_runs

RUN_FILE = "attestations.jsonl"
PENDING_FILE = "pending-attestations.jsonl"
MAX_TEXT = 200
# Personal data has no place in an attestation: a note names where a list is kept, not what is on it.
_PERSONAL = {"an email address": re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}"),
             "an SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
             "a phone number": re.compile(r"(?<![\w-])(?:\+?\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3,4}[\s.-]?"
                                          r"\d{4}(?![\w-])")}


@dataclass
class Attestation:
    """One line of an attestations file: an item attested, or (kind "override") a cut-over forced without some."""

    item: str
    by: str
    at: str
    note: str = ""
    name: str = ""  # the person the item names (the decision-maker item's decision maker)
    target: str | None = None  # pending only: the target it was meant for (None: the next cut-over of any)
    kind: str = "attested"  # or "override"
    missing: list[str] = field(default_factory=list)  # override: the required items not attested

    def to_line(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items()
                           if v not in ("", None, []) or k in ("item", "by", "at")}) + "\n"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_text(text: str, what: str, required: bool = False) -> str:
    """Free text fit for a record: one line, secrets redacted, bounded; personal data refused (ConfigError)."""
    text = redact_text(one_line(text or ""))
    if required and not text:
        raise ConfigError(f"{what} must name a person (it is recorded with the attestation)")
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{what} is longer than {MAX_TEXT} characters: keep it to a few words")
    for label, pattern in _PERSONAL.items():
        if pattern.search(text):
            raise ConfigError(f"{what} holds what looks like {label}: an attestation never holds personal data "
                              "(name where it is kept instead)")
    return text


def item_of(gate: GateConfig, item_id: str) -> PeopleItem:
    """The configured item by id; an unknown id is one line naming the known ones."""
    for item in gate.people:
        if item.id == item_id:
            return item
    known = ", ".join(i.id for i in gate.people) or "none: [[people]] in migration.toml lists no item"
    raise ConfigError(f"unknown item {item_id!r} (known: {known})")


def read(path: Path) -> list[Attestation]:
    """The lines of an attestations file, oldest first (an unreadable line is skipped, never fatal)."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(Attestation(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return found


def _append(path: Path, entry: Attestation) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(entry.to_line())


def open_run(reports: Path, target: str | None, item: PeopleItem | None = None) -> Path | None:
    """The run an attestation for this target belongs to: the one in progress or unfinished; for an item not
    required before the cut-over (the outcome told), else the latest run. None: the pending file."""
    if target is None:
        return None
    runs = recorded_runs(reports, target)
    unfinished = [folder for folder, state in runs if state.status in ("running", "interrupted")]
    if unfinished:
        return unfinished[-1]
    if item is not None and not item.required_before_cutover and runs:
        return runs[-1][0]
    return None


def record(gate: GateConfig, item_id: str, by: str, note: str = "", name: str = "", run_dir: Path | None = None,
           reports: Path | None = None, target: str | None = None) -> tuple[Attestation, Path]:
    """Record one attestation into `run_dir`, else the target's open run, else the pending file. Returns it and
    the file it went into."""
    item = item_of(gate, item_id)
    entry = Attestation(item=item.id, by=clean_text(by, "--by", required=True), at=now_utc(),
                        note=clean_text(note, "--note"),
                        name=clean_text(name, "--name") or (clean_text(by, "--by") if item.decision_maker else ""))
    folder = run_dir or (open_run(reports, target, item) if reports is not None else None)
    if folder is not None:
        path = folder / RUN_FILE
    else:
        if reports is None:
            raise ConfigError("no run folder and no reports folder to record into")
        path, entry.target = reports / PENDING_FILE, target
    _append(path, entry)
    return entry, path


def record_all(gate: GateConfig, run_dir: Path, by: str, note: str) -> list[Attestation]:
    """Every item attested at once into a run (the rehearsal, as the sandbox operator)."""
    return [record(gate, item.id, by, note, run_dir=run_dir)[0] for item in gate.people]


def pending_for(reports: Path, target: str | None) -> list[Attestation]:
    """Pending attestations a cut-over of `target` would take in: those for it and those for no target."""
    return [a for a in read(reports / PENDING_FILE) if a.target is None or a.target == target]


def collected(run_dir: Path | None, reports: Path | None = None, target: str | None = None) -> list[Attestation]:
    """What counts for a run: its own lines, then the pending ones it would take in, oldest first."""
    own = read(run_dir / RUN_FILE) if run_dir is not None else []
    return own + (pending_for(reports, target) if reports is not None else [])


def latest(entries: list[Attestation]) -> dict[str, Attestation]:
    """The latest attestation per item id (a later one supersedes, e.g. another decision maker)."""
    found: dict[str, Attestation] = {}
    for entry in entries:
        if entry.kind == "attested":
            found[entry.item] = entry
    return found


def missing_required(gate: GateConfig, entries: list[Attestation]) -> list[PeopleItem]:
    done = latest(entries)
    return [item for item in gate.people if item.required_before_cutover and item.id not in done]


def missing_lines(gate: GateConfig, entries: list[Attestation]) -> list[str]:
    """One pre-flight line per required item not attested, with the command that attests it."""
    return [f"people: {item.id} not attested ({item.text}): scripts/attest {item.id} --by NAME"
            for item in missing_required(gate, entries)]


def adopt_pending(reports: Path, run_dir: Path, target: str | None) -> int:
    """Take the pending attestations for this target into the run (the cut-over does, once it may start);
    others' stay pending. Returns how many were taken."""
    pending = reports / PENDING_FILE
    entries = read(pending)
    mine = [a for a in entries if a.target is None or a.target == target]
    if not mine:
        return 0
    for entry in mine:
        _append(run_dir / RUN_FILE, entry)
    rest = [a for a in entries if not (a.target is None or a.target == target)]
    tmp = pending.with_suffix(".tmp")
    tmp.write_text("".join(a.to_line() for a in rest), encoding="utf-8")
    tmp.replace(pending)
    if not rest:
        pending.unlink()
    return len(mine)


def record_override(run_dir: Path, missing: list[PeopleItem], by: str) -> Attestation:
    """A cut-over started with --force although required items were not attested: recorded in the run."""
    entry = Attestation(item="", by=clean_text(by, "operator") or "unknown", at=now_utc(), kind="override",
                        missing=[item.id for item in missing])
    _append(run_dir / RUN_FILE, entry)
    return entry


def overrides(run_dir: Path) -> list[Attestation]:
    return [a for a in read(run_dir / RUN_FILE) if a.kind == "override"]


def decision_maker(gate: GateConfig, run_dir: Path) -> str | None:
    """The rollback decision maker recorded for a run (the latest attestation of the decision-maker item), or
    None when the configuration marks no such item or nobody attested it."""
    item = next((i for i in gate.people if i.decision_maker), None)
    if item is None:
        return None
    entry = latest(read(run_dir / RUN_FILE)).get(item.id)
    return (entry.name or entry.by) if entry else None


def status(gate: GateConfig, entries: list[Attestation]) -> list[dict]:
    """Every configured item with its latest attestation (or None), for --list and the sign-off."""
    done = latest(entries)
    return [{"id": item.id, "text": item.text, "required_before_cutover": item.required_before_cutover,
             "decision_maker": item.decision_maker,
             "attestation": asdict(done[item.id]) if item.id in done else None} for item in gate.people]


def describe_target_env() -> str | None:
    """The target of DATABASE_URL (host:port/db), or None when it is not set: attesting needs no secret."""
    dsn = variable("DATABASE_URL") or ""
    if not dsn.strip():
        return None
    try:
        return describe_target(dsn)
    except Exception:  # noqa: BLE001 - psycopg's ProgrammingError; one line either way
        raise ConfigError("DATABASE_URL is not a valid connection string") from None
