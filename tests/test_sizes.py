"""One size reader (migration_gate.db.sizes) under lint, the forecast, the checksums' work order and the scans' worker
count: where the statistics say nothing the rows are counted, by every caller alike."""

from __future__ import annotations

import psycopg

from migration_gate.checks import lint
from migration_gate.db import sizes
from migration_gate.run import forecast
from migration_gate.scan import ranges


def test_every_size_reader_counts_a_table_whose_statistics_say_nothing(new_db) -> None:
    with psycopg.connect(new_db(), autocommit=True) as conn:
        conn.execute("CREATE TABLE filled (id int PRIMARY KEY, note text)")
        conn.execute("ANALYZE filled")  # analyzed while empty: reltuples 0, whatever is written afterwards
        conn.execute("INSERT INTO filled SELECT g, 'x' FROM generate_series(1, 50) g")
        size = sizes.table_size(conn, "public", "filled")
        assert size is not None and size.rows == 50 and size.bytes >= size.data_bytes > 0 and not size.estimated
        assert lint.table_size(conn, "public.filled") == (50, size.bytes)
        assert forecast._table_size(conn, "public", "filled") == {"rows": 50, "bytes": size.bytes}
        assert sizes.table_size(conn, "public", "filled", count_below=1).rows is None  # too large to count: unknown
        assert sizes.table_size(conn, "public", "nothing") is None and lint.table_size(conn, "public.nothing") is None
        assert "public.filled" in sizes.catalog_bytes(conn)  # the checksums' work order (backup.checksums)
        assert ranges.workers_for(conn, "public", ["filled", "nothing"]) == 1  # small: this process alone
