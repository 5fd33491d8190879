"""The database schema (DESIGN §3): typed ORM for the clinical metadata, Core tables for
the samples.

Metadata rows are few and rich: they go through the SQLAlchemy 2 typed ORM and every
write to them is audited (``audit`` rows form a hash chain, see ``audit.py``). Samples
are many and uniform: numerics go into one narrow table keyed by (session, channel, t) and
waves into chunks of packed little-endian float32, both written with Core bulk inserts.

All times are host UTC in integer microseconds since the epoch (``*_us``); session time is
``t_us - session.t0_us``. Nothing here is ever deleted by the app: a correction is a new
annotation whose ``amends_id`` points at what it corrects.

The schema is owned by Alembic (``migrations/``); a test checks that ``upgrade head`` on an
empty file produces exactly this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AlarmEventRow",
    "AnnotationRow",
    "AuditRow",
    "Base",
    "DataLossRow",
    "DeviceEventRow",
    "DeviceRow",
    "PatientRow",
    "PumpEventRow",
    "SessionRow",
    "numeric_table",
    "wave_table",
]

#: Constraint names stable across databases, so migrations can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PatientRow(Base):
    """A pseudonymous patient: no name is needed or stored."""

    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    created_us: Mapped[int] = mapped_column(BigInteger)


class SessionRow(Base):
    """One infusion session. ``t0_us`` is the infusion start (from the pump, or marked by
    hand); ``status`` is open, closed, or recovered (closed after a crash with a gap
    marker). The programme columns keep what was planned (clinical.md §1.1 asks for the
    protocol as data)."""

    __tablename__ = "session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    room: Mapped[str] = mapped_column(String(64), default="")
    clinicians: Mapped[str] = mapped_column(Text, default="")
    protocol: Mapped[str] = mapped_column(String(128), default="")
    drug: Mapped[str] = mapped_column(String(64), default="ketamine")
    route: Mapped[str] = mapped_column(String(32), default="IV")
    weight_kg: Mapped[float | None] = mapped_column(Float)
    weight_basis: Mapped[str] = mapped_column(String(16), default="actual")
    dose_mg_per_kg: Mapped[float | None] = mapped_column(Float)
    duration_min: Mapped[float | None] = mapped_column(Float)
    concentration_mg_ml: Mapped[float | None] = mapped_column(Float)
    bag_ml: Mapped[float | None] = mapped_column(Float)
    series_index: Mapped[int | None] = mapped_column(Integer)
    series_total: Mapped[int | None] = mapped_column(Integer)
    alarm_limits: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    demo: Mapped[int] = mapped_column(Integer, default=0)
    created_us: Mapped[int] = mapped_column(BigInteger)
    t0_us: Mapped[int | None] = mapped_column(BigInteger)
    closed_us: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    # Which process records this session: crash recovery asks whether it still runs.
    # Not audited (operational, not clinical), see audit.UNAUDITED.
    owner_host: Mapped[str] = mapped_column(String(255), default="")
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_us: Mapped[int | None] = mapped_column(BigInteger)

    patient: Mapped[PatientRow | None] = relationship()


class DeviceRow(Base):
    """A device connected during a session; ``source`` is the name its messages carry."""

    __tablename__ = "device"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    protocol: Mapped[str] = mapped_column(String(64), default="")
    port: Mapped[str] = mapped_column(String(255), default="")
    serial_number: Mapped[str] = mapped_column(String(64), default="")
    created_us: Mapped[int] = mapped_column(BigInteger)


class AnnotationRow(Base):
    """An entry on the session timeline: observation, cue, assessment, phase, or a
    system-written gap marker. Corrections are new rows with ``amends_id``."""

    __tablename__ = "annotation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    t_us: Mapped[int] = mapped_column(BigInteger)
    author: Mapped[str] = mapped_column(String(128), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str] = mapped_column(String(64), default="")  # cue id, scale id, phase name
    value: Mapped[float | None] = mapped_column(Float)
    amends_id: Mapped[int | None] = mapped_column(ForeignKey("annotation.id"), index=True)
    created_us: Mapped[int] = mapped_column(BigInteger)


class AlarmEventRow(Base):
    """One alarm-system event: raise, escalate, acknowledge, audio pause, clear, ..."""

    __tablename__ = "alarm_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    t_us: Mapped[int] = mapped_column(BigInteger)
    condition: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    limit: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(128), default="")


class PumpEventRow(Base):
    """A pump state as reported: every change of state, rate or alarm."""

    __tablename__ = "pump_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    t_us: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    rate_ml_h: Mapped[float | None] = mapped_column(Float)
    volume_infused_ml: Mapped[float | None] = mapped_column(Float)
    vtbi_ml: Mapped[float | None] = mapped_column(Float)
    bolus_ml: Mapped[float | None] = mapped_column(Float)
    drug: Mapped[str | None] = mapped_column(String(64))
    concentration_mg_ml: Mapped[float | None] = mapped_column(Float)
    alarms: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {code, raw, text}
    infusion_id: Mapped[int] = mapped_column(Integer, default=0)


class DeviceEventRow(Base):
    """A device state change (connecting, streaming, stale, disconnected): the record of
    why data has a gap."""

    __tablename__ = "device_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    t_us: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class DataLossRow(Base):
    """Data the app could not keep, counted so the record says so (issue 12): while the
    disk was unavailable longer than the memory bound allows, waves went first, then
    numerics; or rows still unwritten when the session closed. ``first_t_us`` and
    ``last_t_us`` bound the sample times of what was lost, per channel."""

    __tablename__ = "data_loss"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("session.id"), index=True)
    t_us: Mapped[int] = mapped_column(BigInteger)  # when the loss was recorded
    kind: Mapped[str] = mapped_column(String(16))  # "wave" or "numeric"
    channel: Mapped[str] = mapped_column(String(32), default="")
    rows: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(BigInteger)  # wave samples (= rows for numerics)
    first_t_us: Mapped[int] = mapped_column(BigInteger)
    last_t_us: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")


class AuditRow(Base):
    """Hash-chained log of every clinical write (see audit.py)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    t_us: Mapped[int] = mapped_column(BigInteger)
    table_name: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


numeric_table = Table(
    "numeric",
    Base.metadata,
    Column("session_id", Integer, ForeignKey("session.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("t_us", BigInteger, nullable=False),
    Column("value", Float, nullable=True),
    Column("quality", Integer, nullable=False, default=0),
    Column("source", String(64), nullable=False, default=""),
    Column("device_t_us", BigInteger, nullable=True),  # the device's own clock, if sent
    Index("ix_numeric_session_channel_t", "session_id", "channel", "t_us"),
)

wave_table = Table(
    "wave",
    Base.metadata,
    Column("session_id", Integer, ForeignKey("session.id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("t_us", BigInteger, nullable=False),
    Column("rate_hz", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),  # little-endian float32
    Column("quality", Integer, nullable=False, default=0),
    Column("source", String(64), nullable=False, default=""),
    Column("device_t_us", BigInteger, nullable=True),
    Index("ix_wave_session_channel_t", "session_id", "channel", "t_us"),
)
