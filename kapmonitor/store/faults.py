"""Store faults on demand, for tests and benchmarks (the store's counterpart of
``kapmonitor.drivers.faults``).

``DiskFull`` makes SQLite answer SQLITE_FULL ("database or disk is full") exactly as on a
full disk, through the real write path: every connection the engine checks out is told the
file may not grow (``PRAGMA max_page_count`` at its current size), and writes succeed again
when the limit is lifted. No root, no loop device, no monkeypatch: SQLite itself refuses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

__all__ = ["DiskFull"]

#: SQLite's own ceiling for max_page_count: "no limit" for any real file
_NO_LIMIT = 1_073_741_823


class DiskFull:
    """Set ``full`` to make the engine's next checked-out connections refuse to grow the
    file; ``remove()`` lifts the limit for good (pooled connections are dropped, since each
    keeps the limit it was given)."""

    def __init__(self, engine: Engine) -> None:
        self.full = False
        self.engine = engine
        event.listen(engine, "checkout", self._checkout)

    def _checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        cur = dbapi_conn.cursor()
        if self.full:
            (pages,) = cur.execute("PRAGMA page_count").fetchone()
            cur.execute(f"PRAGMA max_page_count={pages}")
        else:
            cur.execute(f"PRAGMA max_page_count={_NO_LIMIT}")
        cur.close()

    def remove(self) -> None:
        self.full = False
        event.remove(self.engine, "checkout", self._checkout)
        self.engine.dispose()
