"""Clinical entries are append-only: a correction is an amendment that points at what it
corrects, and the reader shows the latest version with its history."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapmonitor.store import SessionReader, Store, StoreError


@pytest.fixture
def store(db_path: Path):
    s = Store.open(str(db_path))
    yield s
    s.close()


def test_amended_twice_keeps_three_versions_and_reader_returns_latest(store: Store) -> None:
    sid = store.create_session(patient="KAP-7")
    t = 1_750_000_000_000_000
    first = store.add_annotation(sid, "observation", "tearful", t_us=t, author="therapist A")
    second = store.amend_annotation(first, text="tearful, then laughing", author="therapist A")
    third = store.amend_annotation(second, text="tearful, then laughing; says 'warm'",
                                   author="therapist B")
    other = store.add_annotation(sid, "cue", "Safe place", t_us=t + 5_000_000, code="safe-place")

    entries = SessionReader(store.engine, sid).entries()
    assert [e.id for e in entries] == [third, other]
    latest = entries[0]
    assert latest.text == "tearful, then laughing; says 'warm'"
    assert latest.author == "therapist B"
    assert latest.t_us == t  # an amendment keeps the moment it describes
    assert [h.text for h in latest.history] == ["tearful", "tearful, then laughing"]
    assert latest.root_id == first and latest.amended
    assert not entries[1].amended

    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, text, amends_id FROM annotation ORDER BY id").all()
    assert [(r[0], r[2]) for r in rows] == [(first, None), (second, first), (third, second),
                                             (other, None)]


def test_assessment_with_value_and_phase_marker(store: Store) -> None:
    sid = store.create_session()
    a = store.add_annotation(sid, "assessment", "", code="nausea-nrs", value=3.0, t_us=10)
    p = store.add_annotation(sid, "phase", "Infusion started", code="infusion", t_us=5)
    entries = SessionReader(store.engine, sid).entries()
    assert [(e.id, e.code, e.value) for e in entries] == [(p, "infusion", None),
                                                          (a, "nausea-nrs", 3.0)]


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [("gossip", "x", "unknown annotation kind 'gossip'"),
     ("observation", "   ", "needs text, a code or a value")],
)
def test_bad_annotations_are_refused_with_reason(store: Store, kind: str, text: str,
                                                 reason: str) -> None:
    sid = store.create_session()
    with pytest.raises(StoreError, match=reason):
        store.add_annotation(sid, kind, text)


def test_amendment_cannot_cross_sessions(store: Store) -> None:
    s1, s2 = store.create_session(), store.create_session()
    note = store.add_annotation(s1, "observation", "calm")
    with pytest.raises(StoreError, match="not in this session"):
        store.add_annotation(s2, "observation", "calm", amends_id=note)


def test_closing_twice_is_refused(store: Store) -> None:
    sid = store.create_session()
    store.close_session(sid)
    with pytest.raises(StoreError, match="already closed"):
        store.close_session(sid)


def test_a_short_number_is_an_id_never_a_uid_prefix(store: Store) -> None:
    sid = store.create_session()
    uid = store.session_row(sid).uid
    assert store.session_row(uid[:8]).id == sid
    with pytest.raises(StoreError, match="no session '99'"):
        store.session_row("99")  # even if some uid starts with 99
    with pytest.raises(StoreError, match="no session"):
        store.session_row(uid[:2])
