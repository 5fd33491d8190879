"""The audit trail: a hash chain over every clinical write, and its verification.

Each audit row holds a canonical JSON payload of what was written and
``hash = sha256(prev_hash | table | row_id | action | t_us | payload)``. Changing, deleting
or inserting an audit row breaks the chain from that row on; changing a clinical row
behind the app's back (with plain sqlite3) makes it differ from the payload of its latest
audit row. Samples are audited per committed batch: the audit row holds the batch's table,
session, rowid range, row count and a digest of its rows, so one hash per batch (not per
sample) keeps auditing off the ingest budget.

``verify`` checks that every row of ``numeric`` and ``wave`` belongs to exactly one audited
batch, that batches do not overlap, and that each batch's rows are all there and match its
digest. A sample added with plain sqlite3 (outside every batch), deleted, edited or moved
to another session is named: table, rowid, and session, channel and time where the row is
there to read them. An edit inside a batch is named by the batch's rowid range: one digest
per batch cannot say which of its rows changed.

What the chain proves, and what it cannot: a database that verifies was either written
only through the app, or rewritten *entirely* by someone who recomputed every hash from
the genesis on, because the chain is keyed by nothing secret (anyone with the file and
this source can do it). The remedy is an anchor outside the file: ``verify`` prints the
latest chain hash, and a hash written into the chart, a paper log or a message at the end
of a session can later be checked with ``kapmonitor verify --expect-hash``. A record
rewritten after the anchor no longer contains that hash. Nothing in the file can prove
that data was never recorded (a session stopped early), or that a device reported the
truth; SQLite's own ``integrity_check`` (run first by ``verify``) covers damage to the
file rather than edits to its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, select, text

from .schema import AuditRow, Base

__all__ = ["GENESIS", "MIN_ANCHOR_CHARS", "SAMPLE_TABLES", "UNAUDITED", "AuditFault",
           "VerifyReport", "append", "canonical", "row_payload", "sample_digest", "verify",
           "verify_report"]

GENESIS = "0" * 64

#: Columns that are operational, not clinical: updated without an audit row.
UNAUDITED: Mapping[str, frozenset[str]] = {"session": frozenset({"heartbeat_us", "owner_pid",
                                                                  "owner_host"})}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True)


def _chain_hash(prev: str, table: str, row_id: int | None, action: str, t_us: int,
                payload: str) -> str:
    h = hashlib.sha256()
    for part in (prev, table, "" if row_id is None else str(row_id), action, str(t_us),
                 payload):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


def row_payload(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    skip = UNAUDITED.get(table, frozenset())
    return {k: v for k, v in row.items() if k not in skip}


def _cell(v: Any) -> str:
    return v.hex() if isinstance(v, bytes | memoryview) else str(v)


def sample_digest(rows: Iterable[Sequence[Any]], blobs: bool = False) -> str:
    """Digest of sample rows given as tuples in table column order and rowid order, exactly
    as SQLite returns them (floats as floats, None for NULL). ``str`` of a float is its
    shortest round-trip repr, so the digest is stable across write and read-back; blobs
    are hashed as hex. One join and one hash per batch keep this off the ingest budget."""
    fmt = (lambda row: "\x1f".join(map(_cell, row))) if blobs else (
        lambda row: "\x1f".join(map(str, row)))
    return hashlib.sha256("\n".join(map(fmt, rows)).encode()).hexdigest()


def _last_hash(conn: Connection) -> str:
    last = conn.execute(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)).scalar()
    return last or GENESIS


def append(conn: Connection, table: str, row_id: int | None, action: str, t_us: int,
           payload: Mapping[str, Any]) -> str:
    """Add one audit row in the caller's transaction (so the write and its audit commit or
    fail together). SQLite serialises writers, so reading the last hash inside the same
    write transaction is race-free."""
    body = canonical(payload)
    prev = _last_hash(conn)
    digest = _chain_hash(prev, table, row_id, action, t_us, body)
    conn.execute(
        AuditRow.__table__.insert().values(
            t_us=t_us, table_name=table, row_id=row_id, action=action, payload=body,
            prev_hash=prev, hash=digest,
        )
    )
    return digest


#: Tables whose rows are audited per batch (``Recorder._insert_samples``).
SAMPLE_TABLES = ("numeric", "wave")

def _row_tables() -> list[str]:
    """Tables whose rows are audited one by one (``store.insert_audited``): every table
    with an ``id`` key except the audit itself and the sample tables, so a table added to
    the schema is covered without a list to keep in step."""
    return sorted(name for name, t in Base.metadata.tables.items()
                  if "id" in t.c and name != "audit" and name not in SAMPLE_TABLES)

#: The shortest chain-hash prefix ``--expect-hash`` accepts: 16 hex digits are 64 bits,
#: beyond reach of a forger searching for a rewritten chain that happens to contain it,
#: yet short enough to copy into a chart by hand.
MIN_ANCHOR_CHARS = 16


@dataclass(frozen=True, slots=True)
class AuditFault:
    """One finding: where (table and row, or rows ``row_id..last_row_id``), which audit
    record it concerns if any, and what is wrong in words."""

    audit_id: int | None
    table: str
    row_id: int | None
    reason: str
    last_row_id: int | None = None

    def __str__(self) -> str:
        if self.row_id is None:
            where = self.table
        elif self.last_row_id is not None and self.last_row_id != self.row_id:
            where = f"{self.table} rows {self.row_id}..{self.last_row_id}"
        else:
            where = f"{self.table} row {self.row_id}"
        audit = f" (audit #{self.audit_id})" if self.audit_id is not None else ""
        return f"{where}{audit}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_report`` found, with what ``kapmonitor verify`` prints to anchor the
    record outside the file: the chain's length and its latest hash."""

    faults: list[AuditFault]
    records: int  # audit rows in the chain
    head_hash: str  # hash of the latest audit row (GENESIS for an empty chain)
    head_id: int | None
    samples: dict[str, int] = field(default_factory=dict)  # rows per sample table
    anchor_id: int | None = None  # audit row whose hash matched ``expect_hash``

    @property
    def ok(self) -> bool:
        return not self.faults


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _current_rows(conn: Connection, table: str) -> dict[int, dict[str, Any]]:
    """Every row of an audited table by id: one scan per table, not a query per row (a
    long session has tens of thousands of pump and alarm events)."""
    t = _table(table)
    return {row["id"]: row_payload(table, dict(row))
            for row in conn.execute(select(t)).mappings()}


def _when(t_us: Any) -> str:
    try:
        return datetime.fromtimestamp(t_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return f"t_us {t_us!r}"


@dataclass(slots=True)
class _Batch:
    """One sample batch as its audit row recorded it."""

    audit_id: int
    table: str
    session_id: int | None
    first: int
    last: int
    count: int
    digest: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_batch(audit_id: int, payload: str) -> _Batch | None:
    try:
        b = json.loads(payload)
        first, last, count, digest = b["first_rowid"], b["last_rowid"], b["count"], b["digest"]
        table, session = b["table"], b.get("session_id")
    except (ValueError, KeyError, TypeError):
        return None
    if not (_is_int(first) and _is_int(last) and _is_int(count) and isinstance(digest, str)
            and isinstance(table, str) and (session is None or _is_int(session))):
        return None
    return _Batch(audit_id, table, session, first, last, count, digest)


class _Span:
    """Sessions, channels and times of some sample rows, for naming them in a fault."""

    __slots__ = ("channels", "sessions", "t_max", "t_min", "value")

    def __init__(self) -> None:
        self.sessions: set[Any] = set()
        self.channels: set[str] = set()
        self.t_min: Any = None
        self.t_max: Any = None
        self.value: Any = None

    def add(self, row: Sequence[Any], numeric: bool) -> None:
        # row = (rowid, session_id, channel, t_us, value-or-rate_hz, ...)
        self.sessions.add(row[1])
        self.channels.add(str(row[2]))
        t = row[3]
        if _is_int(t):
            self.t_min = t if self.t_min is None else min(self.t_min, t)
            self.t_max = t if self.t_max is None else max(self.t_max, t)
        self.value = row[4] if numeric else None

    def describe(self, n: int) -> str:
        sessions = ", ".join(str(s) for s in sorted(self.sessions, key=str))
        parts = [f"session {sessions}" if len(self.sessions) == 1 else f"sessions {sessions}",
                 "/".join(sorted(self.channels))]
        if self.t_min is not None:
            parts.append(_when(self.t_min) + " UTC" if self.t_min == self.t_max
                         else f"{_when(self.t_min)} to {_when(self.t_max)} UTC")
        if n == 1 and self.value is not None:
            parts.append(f"value {self.value}")
        return ", ".join(parts)


class _SampleCheck:
    """The coverage and digest check of one sample table, as one pass over its rows in
    rowid order merged with its batches sorted by range: linear in rows plus batches,
    one table scan, no query per batch."""

    def __init__(self, table: str, batches: list[_Batch], faults: list[AuditFault]) -> None:
        self.table = table
        self.numeric = table == "numeric"
        self.faults = faults
        self.batches = self._consistent(sorted(batches, key=lambda b: (b.first, b.last,
                                                                       b.audit_id)))
        self.rows = 0
        self._orphans: list[int] = []  # rowids of the current run outside every batch
        self._orphan_span = _Span()

    def _fault(self, audit_id: int | None, first: int, last: int, reason: str) -> None:
        self.faults.append(AuditFault(audit_id, self.table, first, reason, last))

    def _consistent(self, batches: list[_Batch]) -> list[_Batch]:
        """Batches that can own rows: a recorder batch is a contiguous rowid range of
        ``count`` rows, and no row is in two batches. An audit record that breaks this
        was not written by the recorder (its chain hash may still be right if the chain
        was rewritten)."""
        kept: list[_Batch] = []
        for b in batches:
            if b.last < b.first or b.count != b.last - b.first + 1:
                self._fault(b.audit_id, b.first, b.last,
                            f"the audited batch says {b.count} rows for rowids "
                            f"{b.first}..{b.last}: the audit record is inconsistent")
                if b.last < b.first:
                    continue
            if kept and b.first <= kept[-1].last:
                o = kept[-1]
                self._fault(b.audit_id, b.first, b.last,
                            f"this audited batch overlaps audit #{o.audit_id} (rows "
                            f"{o.first}..{o.last}): a sample must belong to exactly one batch")
                continue
            kept.append(b)
        return kept

    def run(self, rows: Iterable[Row[Any]]) -> int:
        batches = iter(self.batches)
        b = next(batches, None)
        members: list[Row[Any]] = []
        for row in rows:
            self.rows += 1
            r = row[0]
            while b is not None and b.last < r:
                self._close(b, members)
                members = []
                b = next(batches, None)
            if b is not None and b.first <= r:
                self._end_orphans()
                members.append(row)
            else:
                if self._orphans and r != self._orphans[-1] + 1:
                    self._end_orphans()
                self._orphans.append(r)
                self._orphan_span.add(row, self.numeric)
        self._end_orphans()
        while b is not None:
            self._close(b, members)
            members = []
            b = next(batches, None)
        return self.rows

    def _end_orphans(self) -> None:
        if not self._orphans:
            return
        first, last, n = self._orphans[0], self._orphans[-1], len(self._orphans)
        self._fault(None, first, last,
                    f"{'sample' if n == 1 else f'{n} samples'} "
                    f"({self._orphan_span.describe(n)}) in no audited batch: added outside "
                    "the recorder")
        self._orphans = []
        self._orphan_span = _Span()

    def _close(self, b: _Batch, members: list[Row[Any]]) -> None:
        present = [row[0] for row in members]
        missing = list(_missing(b.first, b.last, present))
        for first, last in missing:
            n = last - first + 1
            self._fault(b.audit_id, first, last,
                        f"{'sample' if n == 1 else f'{n} samples'} of session {b.session_id} "
                        f"missing from the audited batch of rows {b.first}..{b.last}: deleted")
        if b.session_id is not None:
            for row in members:
                if row[1] != b.session_id:
                    span = _Span()
                    span.add(row, self.numeric)
                    self._fault(b.audit_id, row[0], row[0],
                                f"sample ({span.describe(1)}) was recorded for session "
                                f"{b.session_id}: moved to another session")
        if missing:
            return  # the digest cannot match; the deletion is the finding
        if sample_digest((row[1:] for row in members), not self.numeric) != b.digest:
            span = _Span()
            for row in members:
                span.add(row, self.numeric)
            if len(members) == 1:
                what = (f"sample ({span.describe(1)}) differs from the digest recorded for "
                        "its batch: edited")
            else:
                what = (f"samples ({span.describe(len(members))}) differ from the digest "
                        "recorded for their batch: a sample in these rows was edited")
            self._fault(b.audit_id, b.first, b.last, what)


def _missing(first: int, last: int, present: list[int]) -> Iterator[tuple[int, int]]:
    """Runs of rowids in ``first..last`` absent from ``present`` (ascending), as
    (first, last): linear in the rows present, whatever the range."""
    expect = first
    for r in present:
        if r > expect:
            yield expect, r - 1
        expect = r + 1
    if expect <= last:
        yield expect, last


def verify_report(conn: Connection, *, expect_hash: str | None = None) -> VerifyReport:
    """Check the chain, every audited row against its latest audit payload, and every
    sample row against the batch that owns it. ``expect_hash`` (a full chain hash or a
    prefix of at least ``MIN_ANCHOR_CHARS``, written down earlier) must be the hash of
    some row of the intact chain: the record may have grown since, but a chain rewritten
    after the anchor no longer contains it. Faults come in the order found."""
    faults: list[AuditFault] = []
    prev = GENESIS
    records = 0
    head_id: int | None = None
    anchor_id: int | None = None
    anchor = expect_hash.strip().lower() if expect_hash else None
    latest: dict[tuple[str, int], tuple[int, str]] = {}
    batches: dict[str, list[_Batch]] = {t: [] for t in SAMPLE_TABLES}
    audit_t = AuditRow.__table__
    for a in conn.execute(select(audit_t).order_by(audit_t.c.id)):
        records += 1
        head_id = a.id
        if a.prev_hash != prev:
            faults.append(AuditFault(a.id, "audit", a.id,
                                     "chain broken: prev_hash does not match the row before"))
        expect = _chain_hash(a.prev_hash, a.table_name, a.row_id, a.action, a.t_us, a.payload)
        if a.hash != expect:
            faults.append(AuditFault(a.id, "audit", a.id,
                                     "audit row altered: its hash does not match its content"))
        prev = a.hash
        if anchor is not None and anchor_id is None and str(a.hash).startswith(anchor):
            anchor_id = a.id
        if a.action == "samples":
            batch = _read_batch(a.id, a.payload)
            if batch is None:
                faults.append(AuditFault(a.id, "audit", a.id, "sample batch record unreadable"))
            elif batch.table not in batches:
                faults.append(AuditFault(a.id, "audit", a.id,
                                         f"sample batch names an unknown table {batch.table!r}"))
            else:
                batches[batch.table].append(batch)
        elif a.row_id is not None:
            latest[(a.table_name, a.row_id)] = (a.id, a.payload)
    if anchor is not None and anchor_id is None:
        faults.append(AuditFault(None, "audit", None,
                                 f"the anchored hash {anchor} is not in the audit chain: the "
                                 "chain was rewritten after it was written down (or it was "
                                 "copied wrong)"))
    row_tables = _row_tables()
    current_rows = {table: _current_rows(conn, table) for table in row_tables}
    for (table, row_id), (audit_id, payload) in latest.items():
        if table not in current_rows:
            faults.append(AuditFault(audit_id, "audit", audit_id,
                                     f"audit record for {table!r} row {row_id}, a table whose "
                                     "rows are not audited one by one"))
            continue
        current = current_rows[table].get(row_id)
        if current is None:
            faults.append(AuditFault(audit_id, table, row_id, "row deleted"))
        elif canonical(current) != payload:
            try:
                recorded = json.loads(payload)
                changed = sorted(k for k in set(recorded) | set(current)
                                 if current.get(k) != recorded.get(k))
            except ValueError:
                changed = ["audit payload unreadable"]
            faults.append(AuditFault(audit_id, table, row_id,
                                     f"row differs from its audit record ({', '.join(changed)})"))
    samples: dict[str, int] = {}
    for table in SAMPLE_TABLES:
        check = _SampleCheck(table, batches[table], faults)
        stmt = text(f"SELECT rowid, * FROM {table} ORDER BY rowid")
        rows = conn.execute(stmt.execution_options(yield_per=10_000))
        samples[table] = check.run(rows)
    for table in row_tables:
        known = {rid for (tb, rid) in latest if tb == table}
        for rid in sorted(set(current_rows[table]) - known):
            faults.append(AuditFault(None, table, rid, "row has no audit record"))
    return VerifyReport(faults, records, prev if records else GENESIS, head_id, samples,
                        anchor_id)


def verify(conn: Connection) -> list[AuditFault]:
    """The faults ``verify_report`` finds (empty when all is well)."""
    return verify_report(conn).faults
