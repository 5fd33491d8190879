"""The audit trail: a hash chain over every clinical write, and its verification.

Each audit row holds a canonical JSON payload of what was written and
``hash = sha256(prev_hash | table | row_id | action | t_us | payload)``. Changing, deleting
or inserting an audit row breaks the chain from that row on; changing a clinical row
behind the app's back (with plain sqlite3) makes it differ from the payload of its latest
audit row. Samples are audited per committed batch: the audit row holds the batch's rowid
range, row count and a digest of its rows, so an edited sample is found too, at the cost of
one hash per batch rather than per sample.

``verify`` names the first broken row, so whoever investigates knows where to look.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select, text

from .schema import AuditRow, Base

__all__ = ["GENESIS", "UNAUDITED", "AuditFault", "append", "canonical", "row_payload",
           "sample_digest", "verify"]

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


@dataclass(frozen=True, slots=True)
class AuditFault:
    audit_id: int | None
    table: str
    row_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.table} row {self.row_id}" if self.row_id is not None else self.table
        audit = f" (audit #{self.audit_id})" if self.audit_id is not None else ""
        return f"{where}{audit}: {self.reason}"


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _current_row(conn: Connection, table: str, row_id: int) -> dict[str, Any] | None:
    t = _table(table)
    row = conn.execute(select(t).where(t.c.id == row_id)).mappings().first()
    return None if row is None else row_payload(table, dict(row))


def verify(conn: Connection) -> list[AuditFault]:
    """Check the chain and every audited row against its latest audit payload. Returns
    faults in the order found (empty when all is well)."""
    faults: list[AuditFault] = []
    prev = GENESIS
    latest: dict[tuple[str, int], tuple[int, str]] = {}
    batches: list[tuple[int, dict[str, Any]]] = []
    audit_t = AuditRow.__table__
    for a in conn.execute(select(audit_t).order_by(audit_t.c.id)):
        if a.prev_hash != prev:
            faults.append(AuditFault(a.id, "audit", a.id,
                                     "chain broken: prev_hash does not match the row before"))
        expect = _chain_hash(a.prev_hash, a.table_name, a.row_id, a.action, a.t_us, a.payload)
        if a.hash != expect:
            faults.append(AuditFault(a.id, "audit", a.id,
                                     "audit row altered: its hash does not match its content"))
        prev = a.hash
        if a.action == "samples":
            try:
                batch = json.loads(a.payload)
                batches.append((a.id, {k: batch[k] for k in (
                    "table", "first_rowid", "last_rowid", "count", "digest")}))
            except (ValueError, KeyError, TypeError):
                faults.append(AuditFault(a.id, "audit", a.id, "sample batch record unreadable"))
        elif a.row_id is not None:
            latest[(a.table_name, a.row_id)] = (a.id, a.payload)
    for (table, row_id), (audit_id, payload) in latest.items():
        current = _current_row(conn, table, row_id)
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
    for audit_id, b in batches:
        table = b["table"]
        if table not in ("numeric", "wave"):
            faults.append(AuditFault(audit_id, "audit", audit_id,
                                     f"sample batch names an unknown table {table!r}"))
            continue
        rows = conn.execute(
            text(f"SELECT * FROM {table} WHERE rowid BETWEEN :a AND :b ORDER BY rowid"),
            {"a": b["first_rowid"], "b": b["last_rowid"]},
        ).all()
        if len(rows) != b["count"] or sample_digest(rows, table == "wave") != b["digest"]:
            faults.append(AuditFault(audit_id, table, b["first_rowid"],
                                     f"sample rows {b['first_rowid']}..{b['last_rowid']} "
                                     "differ from the batch recorded in the audit"))
    audited_tables = {"patient", "session", "device", "annotation", "alarm_event",
                      "pump_event", "device_event"}
    for table in sorted(audited_tables):
        t = _table(table)
        ids = {r for (r,) in conn.execute(select(t.c.id))}
        known = {rid for (tb, rid) in latest if tb == table}
        for rid in sorted(ids - known):
            faults.append(AuditFault(None, table, rid, "row has no audit record"))
    return faults
