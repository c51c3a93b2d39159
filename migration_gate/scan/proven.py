"""Ciphertexts proven before the window: what the pre-checks decrypted, kept as digests so that the post-check
decrypts only what changed since.

The pre-check that decrypts every legacy PHI value (PRE-05) records, per legacy column and key bucket whose every
value decrypted to something that is not ciphertext again, the count of its stored values, the sum of one 64-bit
hash of each and the xor of another (PostgreSQL's hashtextextended with two seeds, computed by the very query that
streamed the values to decryption), with the buckets' bounds and a one-way fingerprint of the key: PHI-free, in
<run_dir>/phi/proven.json. After the migration, a new PHI column that the description maps from a
legacy column is digested per bucket in SQL, over the new table's key: a bucket whose digest equals the recorded
one holds exactly the ciphertexts already proven (byte for byte, as a multiset) and is not decrypted again; any
other bucket (a write after the pre-checks, a re-encrypted value, a changed or moved row, another key) is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from migration_gate.config import GateConfig
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import PhiCodec
from migration_gate.scan.ranges import Buckets

FOLDER = "phi"
FILE = "proven.json"
Digest = tuple[int, int, int]  # non-NULL values, sum of one hash of each, xor of another


class ProvenError(MigrationGateError, ValueError):
    """The record cannot be read (the post-check then decrypts everything)."""


def path_of(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER / FILE


def record(run_dir: Path, codec: PhiCodec, table: str, key: str, buckets: Buckets,
           digests: dict[tuple[str, int], tuple[int, int, int, int]], columns: list[str]) -> Path:
    """Add one legacy table's proven buckets to the run's record (replacing what it held for that table): per
    bucket its digest and the number of values decrypted there."""
    path = path_of(run_dir)
    data = _read(path) or {}
    if data.get("key") != codec.fingerprint():
        data = {"key": codec.fingerprint(), "tables": {}}
    data["tables"][table] = {
        "key": key, "buckets": buckets.to_json(),
        "columns": {c: {str(b): list(d) for (col, b), d in sorted(digests.items()) if col == c} for c in columns}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProvenError(f"{FOLDER}/{FILE} cannot be read ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise ProvenError(f"{FOLDER}/{FILE} is not a record of proven ciphertexts")
    return data


@dataclass(frozen=True)
class ProvenColumn:
    """A new PHI column's recorded proof: its legacy source, how keys were bucketed, each proven bucket's digest."""

    legacy: str  # "table.column"
    buckets: Buckets
    digests: dict[int, Digest]
    checked: dict[int, int]  # values the pre-check decrypted in each proven bucket (blank ones are not counted)


@dataclass
class Proven:
    """The proofs that apply to the new schema's PHI columns, by (new table, new column)."""

    columns: dict[tuple[str, str], ProvenColumn] = field(default_factory=dict)
    note: str = ""  # why there is nothing to use, when there is nothing

    def get(self, table: str, column: str) -> ProvenColumn | None:
        return self.columns.get((table, column))


def load(run_dir: Path | None, gate: GateConfig, codec: PhiCodec) -> Proven:
    """The run's record mapped onto the new columns through the description's [tables] phi mappings. A record made
    with another key, or none at all, proves nothing."""
    if run_dir is None:
        return Proven(note="no run folder")
    try:
        data = _read(path_of(run_dir))
    except ProvenError as exc:
        return Proven(note=str(exc))
    if data is None:
        return Proven(note=f"no {FOLDER}/{FILE} in the run folder (the pre-checks did not record one)")
    if data.get("key") != codec.fingerprint():
        return Proven(note=f"{FOLDER}/{FILE} was recorded with another key")
    found = Proven()
    for mapping in gate.tables:
        table = data["tables"].get(mapping.legacy)
        if table is None or table.get("key") != mapping.source_key:
            continue
        buckets = Buckets.from_json(table["buckets"])
        for legacy_column, new_column in mapping.phi.items():
            digests = table["columns"].get(legacy_column)
            if digests is not None:
                found.columns[(mapping.new, new_column)] = ProvenColumn(
                    f"{mapping.legacy}.{legacy_column}", buckets,
                    {int(b): (int(d[0]), int(d[1]), int(d[2])) for b, d in digests.items()},
                    {int(b): int(d[3]) for b, d in digests.items()})
    return found
