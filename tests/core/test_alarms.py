"""The alarm engine against clinical.md §4.2 (limits), §4.3 (consider hold), §5.1-§5.3
(priorities, delays, latching, acknowledge, audio pause). Table-driven: each case id says
what it checks. Time is explicit (integer microseconds); nothing sleeps."""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterable, Sequence

import pytest

from kapmonitor.alarm_limits import AlarmLimits, LimitsError, Priority, parse_override_args
from kapmonitor.alarms import (
    AlarmAction,
    AlarmCommandError,
    AlarmEngine,
    AlarmEvent,
    AlarmKind,
    AudioMode,
)
from kapmonitor.model import (
    Channel,
    DeviceState,
    DeviceStatus,
    PumpAlarm,
    PumpRunState,
    PumpState,
    Quality,
    Reading,
    WaveChunk,
)

S = 1_000_000
H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW
RAISE, ESC, DEESC, CLEAR = (AlarmAction.RAISE, AlarmAction.ESCALATE, AlarmAction.DEESCALATE,
                            AlarmAction.CLEAR)
SPO2, HR, PULSE, SBP, DBP, MAP, RR, ETCO2 = (
    Channel.SPO2, Channel.HR, Channel.PULSE, Channel.NIBP_SYS, Channel.NIBP_DIA,
    Channel.NIBP_MEAN, Channel.RR, Channel.ETCO2,
)


def rd(ch: Channel, v: float, t_s: float, q: Quality = Quality.OK, src: str = "mon") -> Reading:
    return Reading(ch, float(v), round(t_s * S), src, quality=q)


def series(ch: Channel, v: float, t0: float, t1: float, step: float = 1.0,
           q: Quality = Quality.OK) -> list[Reading]:
    """Readings of ``v`` every ``step`` s from t0 to t1 inclusive."""
    n = round((t1 - t0) / step)
    return [rd(ch, v, t0 + i * step, q) for i in range(n + 1)]


def summary(events: Iterable[AlarmEvent]) -> list[tuple[str, str, str, float]]:
    """(action, key, priority, t in s) for comparing with a table."""
    return [(str(e.action), e.key, str(e.priority), e.t_us / S) for e in events]


def phys(events: Iterable[AlarmEvent]) -> list[AlarmEvent]:
    """Only physiological events: a table about limits ignores the advisory a BP reading
    also raises and the stale alarm a long tick raises for a device that went quiet."""
    return [e for e in events if e.kind is AlarmKind.PHYSIOLOGICAL]


def not_stale(events: Iterable[AlarmEvent]) -> list[AlarmEvent]:
    """Without the stale alarm a long tick raises for a device that has gone quiet."""
    return [e for e in events if not e.key.endswith(".stale")]


def play(engine: AlarmEngine, steps: Sequence[object]) -> list[AlarmEvent]:
    """Feed readings / lists of messages; a float is a tick at that time in seconds."""
    out: list[AlarmEvent] = []
    for step in steps:
        if isinstance(step, float | int):
            out += engine.tick(round(step * S))
        elif isinstance(step, list):
            for m in step:
                out += engine.evaluate([m])
        else:
            out += engine.evaluate([step])  # type: ignore[list-item]
    return out


@pytest.fixture
def eng() -> AlarmEngine:
    return AlarmEngine()


# ---------------------------------------------------------------- defaults (§4.2)


@pytest.mark.parametrize(
    ("channel", "low", "high", "esc_low", "esc_high", "delay"),
    [
        pytest.param(HR, "< 50", "> 120", "< 40", "> 150", 10, id="hr-50-120-high-40-150"),
        pytest.param(SPO2, "< 92", None, "< 88", None, 10, id="spo2-92-high-88"),
        pytest.param(SBP, "< 90", "> 180", None, "≥ 200", 0, id="sbp-90-180-high-200"),
        pytest.param(DBP, "< 50", "> 110", None, "≥ 120", 0, id="dbp-50-110-high-120"),
        pytest.param(MAP, "< 60", "> 130", None, None, 0, id="map-60-130"),
        pytest.param(RR, "< 8", "> 30", None, None, 10, id="rr-8-30"),
        pytest.param(ETCO2, "< 25", "> 50", None, None, 10, id="etco2-25-50"),
    ],
)
def test_default_limits_follow_clinical_4_2(channel, low, high, esc_low, esc_high, delay):
    lim = AlarmLimits.defaults().channels[channel]

    def text(th):
        return None if th is None else th.text()

    assert (text(lim.low), text(lim.high)) == (low, high)
    assert (text(lim.escalate_low), text(lim.escalate_high)) == (esc_low, esc_high)
    assert lim.priority is M
    assert lim.delay_s == delay


def test_limits_are_json_and_round_trip(eng):
    doc = json.loads(json.dumps(eng.limits))
    assert doc["channels"]["spo2"]["escalate_low"] == {"op": "<", "value": 88.0}
    assert AlarmLimits.from_mapping(doc) == eng.alarm_limits


# ---------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        pytest.param({"hr.high": 130}, lambda a: a.channels[HR].high.text() == "> 130",
                     id="flat-number-keeps-comparison"),
        pytest.param({"channels": {"spo2": {"low": "<= 90"}}},
                     lambda a: a.channels[SPO2].low.text() == "≤ 90", id="nested-with-op"),
        pytest.param({"nibp_mean.high": None}, lambda a: a.channels[MAP].high is None,
                     id="none-removes-a-limit"),
        pytest.param({"apnoea.seconds": 15}, lambda a: a.apnoea.seconds == 15,
                     id="apnoea-time"),
        pytest.param({"temp.high": 38.5}, lambda a: a.channels[Channel.TEMP].high.value == 38.5,
                     id="adds-a-channel"),
        pytest.param({"technical.pump_priorities.door_open": "high"},
                     lambda a: a.technical.pump_priorities["door_open"] is H,
                     id="pump-priority"),
    ],
)
def test_override_accepted(overrides, check):
    lim = AlarmLimits.defaults().with_overrides(overrides)
    assert check(lim)
    assert lim.overridden
    assert AlarmLimits.from_mapping(json.loads(json.dumps(lim.to_json()))) == lim


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"hr.low": 125}, "must be below the high limit", id="low-above-high"),
        pytest.param({"spo2.low": 85}, "must be below the low limit",
                     id="low-below-its-high-priority-limit"),
        pytest.param({"nibp_sys.high": 210}, "must be above the high limit",
                     id="high-above-its-high-priority-limit"),
        pytest.param({"hr.delay_s": 20}, "0 to 15 s", id="delay-over-15s"),
        pytest.param({"hr.hysteresis": 40}, "too wide", id="hysteresis-too-wide"),
        pytest.param({"hr.hysteresis": -1}, "hysteresis", id="negative-hysteresis"),
        pytest.param({"spo2.low": 120}, "outside the measurable range", id="implausible"),
        pytest.param({"hr.low": "> 50"}, "must alarm below", id="wrong-side-comparison"),
        pytest.param({"hr.high": True}, "must be a limit", id="boolean"),
        pytest.param({"hr.high": math.nan}, "finite", id="nan"),
        pytest.param({"hr.hgih": 130}, "unknown alarm setting channels.hr.hgih", id="typo"),
        pytest.param({"heart.high": 130}, "unknown", id="unknown-channel"),
        pytest.param({"pleth.high": 1}, "numeric channels only", id="wave-channel"),
        pytest.param({"hr.priority": "urgent"}, "low, medium or high", id="bad-priority"),
        pytest.param({"timing.audio_pause_s": 300}, "longer than the longest",
                     id="pause-over-max"),
        pytest.param({"consider_hold.hr_above": 80, "consider_hold.hr_below": 90},
                     "HR low criterion",
                     id="hold-hr-band-inverted"),
    ],
)
def test_override_refused_with_reason(overrides, reason):
    with pytest.raises(LimitsError, match=reason):
        AlarmLimits.defaults().with_overrides(overrides)


def test_parse_override_args():
    assert parse_override_args(["hr.high=130", "spo2.low=< 90", "nibp_mean.high=off",
                                "apnoea.enabled=false"]) == {
        "hr.high": 130, "spo2.low": "< 90", "nibp_mean.high": None, "apnoea.enabled": False,
    }
    with pytest.raises(LimitsError, match=r"hr\.high=130"):
        parse_override_args(["hr.high"])


# ---------------------------------------------------------------- delays and priorities


@pytest.mark.parametrize(
    ("readings", "tick_s", "expected"),
    [
        pytest.param(series(SPO2, 90, 0, 9), 9.999, [], id="spo2-90-for-9.999s-nothing"),
        pytest.param(series(SPO2, 90, 0, 10), None,
                     [("raise", "spo2.low", "medium", 10.0)], id="spo2-90-for-10s-medium"),
        pytest.param(series(SPO2, 86, 0, 10), None,
                     [("raise", "spo2.low", "high", 10.0)], id="spo2-86-for-10s-high-directly"),
        pytest.param(series(SPO2, 92, 0, 30), None, [], id="spo2-at-limit-92-no-alarm"),
        pytest.param([rd(SPO2, 90, 0), rd(SPO2, 90, 4)], 10.0,
                     [("raise", "spo2.low", "medium", 10.0)], id="raised-by-tick-on-time"),
        pytest.param([*series(SPO2, 90, 0, 5), rd(SPO2, 95, 6), *series(SPO2, 90, 7, 17)],
                     None, [("raise", "spo2.low", "medium", 17.0)],
                     id="interrupted-violation-restarts-delay"),
        pytest.param(series(HR, 130, 0, 10), None, [("raise", "hr.high", "medium", 10.0)],
                     id="hr-130-medium"),
        pytest.param(series(HR, 35, 0, 10), None, [("raise", "hr.low", "high", 10.0)],
                     id="hr-35-high"),
        pytest.param(series(HR, 150, 0, 10), None, [("raise", "hr.high", "medium", 10.0)],
                     id="hr-150-is-not-above-150"),
        pytest.param([rd(SBP, 185, 0)], None, [("raise", "nibp_sys.high", "medium", 0.0)],
                     id="sbp-185-immediate-medium"),
        pytest.param([rd(SBP, 200, 0)], None, [("raise", "nibp_sys.high", "high", 0.0)],
                     id="sbp-200-immediate-high"),
        pytest.param([rd(SBP, 180, 0)], None, [], id="sbp-180-is-not-above-180"),
        pytest.param([rd(DBP, 120, 0)], None, [("raise", "nibp_dia.high", "high", 0.0)],
                     id="dbp-120-high"),
        pytest.param([rd(SBP, 85, 0)], None, [("raise", "nibp_sys.low", "medium", 0.0)],
                     id="sbp-85-low"),
        pytest.param([rd(MAP, 55, 0)], None, [("raise", "nibp_mean.low", "medium", 0.0)],
                     id="map-55-low"),
        pytest.param(series(RR, 35, 0, 10), None, [("raise", "rr.high", "medium", 10.0)],
                     id="rr-35-medium"),
        pytest.param(series(ETCO2, 55, 0, 10), None, [("raise", "etco2.high", "medium", 10.0)],
                     id="etco2-55-medium"),
        pytest.param(series(Channel.TEMP, 41, 0, 30), None, [], id="no-limits-no-alarm"),
    ],
)
def test_delay_and_priority(eng, readings, tick_s, expected):
    events = play(eng, [readings] + ([tick_s] if tick_s is not None else []))
    assert summary(phys(events)) == expected


def test_event_message_and_fields(eng):
    (ev,) = play(eng, [series(SPO2, 86, 0, 10)])
    assert ev.message == "SpO2 LOW 86 % (< 88)"
    assert (ev.kind, ev.channel, ev.value, ev.limit, ev.source) == (
        AlarmKind.PHYSIOLOGICAL, SPO2, 86.0, 88.0, "mon")
    json.dumps(ev.to_json())
    with pytest.raises(AttributeError):
        ev.priority = L  # type: ignore[misc]


# ---------------------------------------------------------------- escalation, hysteresis


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [series(SPO2, 91, 0, 11), series(SPO2, 85, 12, 22)],
            [("raise", "spo2.low", "medium", 10.0), ("escalate", "spo2.low", "high", 22.0)],
            id="spo2-medium-escalates-after-delay-in-high-band"),
        pytest.param(
            [series(SPO2, 91, 0, 11), series(SPO2, 85, 12, 15), series(SPO2, 91, 16, 30)],
            [("raise", "spo2.low", "medium", 10.0)],
            id="short-dip-below-88-does-not-escalate"),
        pytest.param(
            [series(SPO2, 85, 0, 10), rd(SPO2, 88, 11), rd(SPO2, 89, 12)],
            [("raise", "spo2.low", "high", 10.0), ("de-escalate", "spo2.low", "medium", 12.0)],
            id="de-escalates-only-past-hysteresis"),
        pytest.param(
            [rd(SBP, 185, 0), rd(SBP, 205, 300), rd(SBP, 190, 600)],
            [("raise", "nibp_sys.high", "medium", 0.0),
             ("escalate", "nibp_sys.high", "high", 300.0),
             ("de-escalate", "nibp_sys.high", "medium", 600.0)],
            id="sbp-one-condition-escalates-and-back"),
    ],
)
def test_escalation_is_one_condition(eng, steps, expected):
    events = phys(play(eng, steps))
    assert summary(events) == expected
    assert len([a for a in eng.active() if a.kind is AlarmKind.PHYSIOLOGICAL]) == 1


@pytest.mark.parametrize(
    ("channel", "alarm_value", "held", "clears_at"),
    [
        pytest.param(SPO2, 90, 92, 93, id="spo2-band-1"),
        pytest.param(HR, 125, 118, 117, id="hr-high-band-3"),
        pytest.param(HR, 45, 52, 53, id="hr-low-band-3"),
        pytest.param(RR, 6, 9, 10, id="rr-low-band-2"),
        pytest.param(ETCO2, 55, 49, 48, id="etco2-high-band-2"),
    ],
)
def test_clearing_needs_the_hysteresis_band(eng, channel, alarm_value, held, clears_at):
    play(eng, [series(channel, alarm_value, 0, 10)])
    assert eng.active()[0].present
    assert play(eng, [series(channel, held, 11, 20)]) == []
    (ev,) = play(eng, [rd(channel, clears_at, 21)])
    assert (ev.action, ev.latched) == (CLEAR, False)
    assert eng.active() == []


def test_nibp_clears_on_the_next_reading_inside_the_limit(eng):
    play(eng, [rd(SBP, 185, 0)])
    assert summary(phys(play(eng, [rd(SBP, 180, 300)]))) == [
        ("clear", "nibp_sys.high", "medium", 300.0)]


# ---------------------------------------------------------------- latching and reset


def test_high_alarm_latches_after_value_returns_until_reset(eng):
    play(eng, [series(SPO2, 86, 0, 10)])
    (clr,) = play(eng, [rd(SPO2, 97, 11)])
    assert (clr.action, clr.latched) == (CLEAR, True)
    (a,) = eng.active()
    assert (a.latched, a.present, a.priority, a.audible) == (True, False, H, False)
    assert eng.audio_state().mode is AudioMode.SILENT
    assert play(eng, [series(SPO2, 97, 12, 300)]) == []  # stays, silently
    (ev,) = eng.reset("spo2.low", 301 * S, user="nurse A")
    assert (ev.action, ev.user, ev.priority) == (AlarmAction.RESET, "nurse A", H)
    assert "latched" not in ev.message
    assert eng.active() == []


@pytest.mark.parametrize(
    ("steps", "latched"),
    [
        pytest.param([series(SPO2, 90, 0, 10), rd(SPO2, 97, 11)], False, id="medium-no-latch"),
        pytest.param([series(SPO2, 85, 0, 10), rd(SPO2, 90, 11), rd(SPO2, 97, 12)], True,
                     id="de-escalated-but-was-high-latches"),
        pytest.param([series(RR, 0, 0, 20), rd(RR, 12, 21)], True, id="apnoea-latches"),
    ],
)
def test_latching_depends_on_peak_priority(eng, steps, latched):
    events = play(eng, steps)
    assert [e.latched for e in events if e.action is CLEAR][-1] is latched
    assert any(a.latched for a in eng.active()) is latched


def test_acknowledged_high_alarm_does_not_latch(eng):
    play(eng, [series(SPO2, 86, 0, 10)])
    eng.acknowledge("spo2.low", 11 * S)
    play(eng, [rd(SPO2, 97, 12)])
    assert eng.active() == []


def test_acknowledging_a_latched_alarm_resets_it(eng):
    play(eng, [series(SPO2, 86, 0, 10), rd(SPO2, 97, 11)])
    (ev,) = eng.acknowledge("spo2.low", 12 * S, user="nurse B")
    assert ev.action is AlarmAction.RESET
    assert eng.active() == []


def test_reset_refused_while_present_and_for_unknown(eng):
    play(eng, [series(SPO2, 86, 0, 10)])
    with pytest.raises(AlarmCommandError, match="still present"):
        eng.reset("spo2.low", 11 * S)
    with pytest.raises(AlarmCommandError, match="no active alarm"):
        eng.reset("hr.high", 11 * S)
    with pytest.raises(AlarmCommandError, match="no active alarm"):
        eng.acknowledge("hr.high", 11 * S)


def test_latched_condition_recurring_is_raised_again(eng):
    play(eng, [series(SPO2, 86, 0, 10), rd(SPO2, 97, 11)])
    events = play(eng, [series(SPO2, 90, 20, 30)])
    assert summary(events) == [("raise", "spo2.low", "medium", 30.0)]
    (a,) = eng.active()
    assert (a.present, a.peak_priority) == (True, H)
    (clr,) = play(eng, [rd(SPO2, 97, 31)])
    assert clr.latched  # the unreset high episode still latches


# ---------------------------------------------------------------- acknowledge


def test_acknowledge_silences_then_reminds(eng):
    play(eng, [series(SPO2, 90, 0, 10)])
    assert eng.audio_state().mode is AudioMode.SOUNDING
    (ack,) = eng.acknowledge("spo2.low", 11 * S, user="nurse")
    assert (ack.action, ack.user) == (AlarmAction.ACKNOWLEDGE, "nurse")
    assert eng.acknowledge("spo2.low", 12 * S) == []  # idempotent
    (a,) = eng.active()
    assert (a.acknowledged, a.audible, a.present) == (True, False, True)
    assert eng.audio_state().mode is AudioMode.SILENT
    assert not_stale(eng.tick(11 * S + 180 * S - 1)) == []
    (rem,) = not_stale(eng.tick(11 * S + 180 * S))
    assert rem.action is AlarmAction.REMINDER
    assert eng.audio_state().priority is M


def test_no_reminder_after_the_condition_ends(eng):
    play(eng, [series(SPO2, 90, 0, 10)])
    eng.acknowledge("spo2.low", 11 * S)
    play(eng, [rd(SPO2, 97, 12)])
    assert not_stale(eng.tick(400 * S)) == []


def test_escalation_cancels_acknowledgement(eng):
    play(eng, [rd(SBP, 185, 0)])
    eng.acknowledge("nibp_sys.high", 1 * S)
    (esc,) = phys(play(eng, [rd(SBP, 210, 300)]))
    assert esc.action is ESC
    assert eng.active()[0].acknowledged is False
    assert eng.audio_state().priority is H


# ---------------------------------------------------------------- audio pause


def test_audio_pause_and_expiry(eng):
    play(eng, [series(SPO2, 90, 0, 10)])
    (p,) = eng.audio_pause(20 * S, user="nurse")
    assert (p.action, p.kind, p.value) == (AlarmAction.AUDIO_PAUSE, AlarmKind.SYSTEM, 120.0)
    st = eng.audio_state(20 * S + 30 * S)
    assert (st.mode, st.priority, st.paused_remaining_s) == (AudioMode.PAUSED, M, 90.0)
    assert eng.active()[0].sounding is False
    assert not_stale(eng.tick(140 * S - 1)) == []
    (r,) = not_stale(eng.tick(140 * S))
    assert r.action is AlarmAction.AUDIO_RESUME
    assert eng.audio_state().mode is AudioMode.SOUNDING


@pytest.mark.parametrize(
    ("before", "during", "breaks"),
    [
        pytest.param([series(SPO2, 90, 0, 10)], [rd(SBP, 205, 20)], True,
                     id="medium-paused-new-high-breaks-through"),
        pytest.param([], [rd(SBP, 205, 20)], True, id="pre-emptive-pause-high-breaks-through"),
        pytest.param([], [series(SPO2, 90, 20, 30)], False,
                     id="pre-emptive-pause-covers-medium"),
        pytest.param([series(SPO2, 90, 0, 10)], [rd(SBP, 185, 20)], False,
                     id="medium-paused-new-medium-stays-paused"),
        pytest.param([series(SPO2, 86, 0, 10)], [rd(SBP, 205, 20)], False,
                     id="high-paused-new-high-is-not-higher"),
        pytest.param([series(SPO2, 91, 0, 10)], [series(SPO2, 85, 20, 30)], True,
                     id="escalation-breaks-through"),
        pytest.param([], [PumpState(20 * S, PumpRunState.ALARM, source="pump",
                                    alarms=(PumpAlarm("occlusion", "b10"),))], True,
                     id="technical-high-breaks-through"),
    ],
)
def test_breakthrough(eng, before, during, breaks):
    play(eng, before)
    eng.audio_pause(15 * S)
    events = play(eng, during)
    resumed = [e for e in events if e.action is AlarmAction.AUDIO_RESUME]
    assert bool(resumed) is breaks
    assert (eng.audio_state(31 * S).mode is AudioMode.PAUSED) is (not breaks)


@pytest.mark.parametrize("seconds", [0, 181, -5, math.nan, True, "120"],
                         ids=["zero", "over-3-min", "negative", "nan", "bool", "text"])
def test_audio_pause_refused(eng, seconds):
    with pytest.raises(AlarmCommandError, match="audio pause"):
        eng.audio_pause(0, seconds)


def test_audio_resume_by_user(eng):
    eng.audio_pause(0, 60)
    (r,) = eng.audio_resume(5 * S, user="nurse")
    assert (r.action, r.user) == (AlarmAction.AUDIO_RESUME, "nurse")
    assert eng.audio_resume(6 * S) == []


# ---------------------------------------------------------------- reading quality


@pytest.mark.parametrize(
    "quality",
    [Quality.INVALID, Quality.QUESTIONABLE, Quality.ARTEFACT, Quality.OUT_OF_RANGE,
     Quality.CALIBRATING, Quality.SENSOR_OFF, Quality.ARTEFACT | Quality.DEMO],
    ids=lambda q: str(q.name or int(q)).lower(),
)
def test_bad_quality_never_alarms(eng, quality):
    events = play(eng, [series(SPO2, 80, 0, 60, q=quality), 61.0])
    assert events == []
    assert eng.stats()["readings_bad_quality"] == 61


def test_demo_quality_alarms(eng):
    assert summary(play(eng, [series(SPO2, 90, 0, 10, q=Quality.DEMO)])) == [
        ("raise", "spo2.low", "medium", 10.0)]


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([rd(SPO2, 150, 0)], id="outside-plausible-range"),
        pytest.param([rd(SPO2, math.nan, 0)], id="nan"),
    ],
)
def test_implausible_values_never_alarm(eng, steps):
    assert not_stale(play(eng, [*steps, 30.0])) == []
    assert eng.stats()["readings_implausible"] == 1


def test_artefact_restarts_delay_and_does_not_clear(eng):
    steps = [series(SPO2, 90, 0, 8), rd(SPO2, 70, 9, Quality.ARTEFACT), series(SPO2, 90, 10, 20)]
    assert summary(play(eng, steps)) == [("raise", "spo2.low", "medium", 20.0)]
    assert play(eng, [series(SPO2, 99, 21, 40, q=Quality.SENSOR_OFF)]) == []
    assert eng.active()[0].present


def test_late_reading_is_ignored(eng):
    play(eng, [rd(SPO2, 97, 10)])
    assert not_stale(play(eng, [rd(SPO2, 80, 5), 30.0])) == []
    assert eng.stats()["readings_out_of_order"] == 1


# ---------------------------------------------------------------- pulse vs HR, apnoea


@pytest.mark.parametrize(
    ("steps", "keys"),
    [
        pytest.param([series(PULSE, 130, 0, 10)], ["pulse.high"], id="pulse-alone-alarms"),
        pytest.param([[m for t in range(11) for m in (rd(HR, 80, t), rd(PULSE, 130, t))]], [],
                     id="pulse-superseded-by-valid-hr"),
        pytest.param([[m for t in range(11) for m in (rd(HR, 130, t), rd(PULSE, 130, t))]],
                     ["hr.high"], id="one-tachycardia-one-alarm"),
    ],
)
def test_pulse_rate_is_the_fallback_for_hr(eng, steps, keys):
    play(eng, steps)
    assert [a.key for a in eng.active()] == keys


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([series(RR, 0, 0, 20)],
                     [("raise", "rr.low", "medium", 10.0), ("raise", "rr.apnoea", "high", 20.0)],
                     id="rr-zero-20s-apnoea-high"),
        pytest.param([series(RR, 0, 0, 15), rd(RR, 10, 16)],
                     [("raise", "rr.low", "medium", 10.0), ("clear", "rr.low", "medium", 16.0)],
                     id="breath-at-16s-no-apnoea"),
        pytest.param([series(ETCO2, 2, 0, 19), 20.0],
                     [("raise", "etco2.low", "medium", 10.0),
                      ("raise", "rr.apnoea", "high", 20.0)],
                     id="no-exhaled-co2-20s-apnoea"),
        pytest.param([series(ETCO2, 2, 0, 19, q=Quality.INVALID), 20.0], [],
                     id="co2-line-fault-is-not-apnoea"),
    ],
)
def test_apnoea(eng, steps, expected):
    assert summary(play(eng, steps)) == expected


# ---------------------------------------------------------------- consider hold (§4.3)


def bp(sbp: float, dbp: float, t_s: float) -> list[Reading]:
    return [rd(SBP, sbp, t_s), rd(DBP, dbp, t_s)]


@pytest.mark.parametrize(
    ("steps", "raised_at"),
    [
        pytest.param([bp(180, 90, 0), bp(180, 90, 300)], 300.0, id="sbp-180-twice"),
        pytest.param([bp(150, 110, 0), bp(150, 110, 300)], 300.0, id="dbp-110-twice"),
        pytest.param([bp(185, 100, 0), bp(170, 112, 300)], 300.0, id="mixed-sbp-then-dbp"),
        pytest.param([bp(185, 100, 0)], None, id="one-reading-is-not-enough"),
        pytest.param([bp(185, 100, 0), bp(170, 90, 300), bp(185, 100, 600)], None,
                     id="not-consecutive"),
        pytest.param([bp(200, 90, 0)], 0.0, id="sbp-200-once"),
        pytest.param([bp(150, 120, 0)], 0.0, id="dbp-120-once"),
        pytest.param([series(SPO2, 89, 0, 30), 30.0], None, id="spo2-89-for-30s-not-more"),
        pytest.param([series(SPO2, 89, 0, 30), 30.000001], 30.000001,
                     id="spo2-89-for-more-than-30s"),
        pytest.param([series(HR, 131, 0, 60)], None, id="hr-131-for-60s-not-more"),
        pytest.param([series(HR, 131, 0, 61)], 61.0, id="hr-131-for-61s"),
        pytest.param([series(HR, 44, 0, 61)], 61.0, id="hr-44-for-61s"),
        pytest.param([series(PULSE, 44, 0, 61)], 61.0, id="pulse-counts-without-ecg"),
        pytest.param([series(HR, 130, 0, 120)], None, id="hr-130-is-not-above-130"),
    ],
)
def test_consider_hold_advisory(eng, steps, raised_at):
    events = play(eng, steps)
    adv = [e for e in events if e.kind is AlarmKind.ADVISORY and e.action is RAISE]
    if raised_at is None:
        assert adv == []
    else:
        (ev,) = adv
        assert ev.t_us == round(raised_at * S)
        assert ev.key.startswith("advisory.hold.")
        assert ev.message.startswith("Consider hold")


def test_advisory_is_silent_and_clears(eng):
    play(eng, [bp(180, 100, 0), bp(180, 100, 300)])
    assert [a.key for a in eng.active()] == ["advisory.hold.bp"]  # 180 is not above "> 180"
    assert eng.audio_state().mode is AudioMode.SILENT
    events = play(eng, [bp(170, 100, 600)])
    assert summary(events) == [("clear", "advisory.hold.bp", "low", 600.0)]


# ---------------------------------------------------------------- technical alarms


def status(state: DeviceState, t_s: float, src: str = "mon") -> DeviceStatus:
    return DeviceStatus(src, state, round(t_s * S))


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([status(DeviceState.STREAMING, 0), status(DeviceState.STALE, 5),
                      status(DeviceState.STREAMING, 8)],
                     [("raise", "tech.mon.stale", "medium", 5.0),
                      ("clear", "tech.mon.stale", "medium", 8.0)], id="driver-stale"),
        pytest.param([status(DeviceState.STALE, 5), status(DeviceState.DISCONNECTED, 9),
                      status(DeviceState.CONNECTING, 10), rd(HR, 80, 12)],
                     [("raise", "tech.mon.stale", "medium", 5.0),
                      ("clear", "tech.mon.stale", "medium", 9.0),
                      ("raise", "tech.mon.disconnected", "medium", 9.0),
                      ("clear", "tech.mon.disconnected", "medium", 12.0)],
                     id="disconnected-then-data-flows"),
        pytest.param([series(HR, 80, 0, 5), 19.999, 20.0, rd(HR, 80, 21)],
                     [("raise", "tech.mon.stale", "medium", 20.0),
                      ("clear", "tech.mon.stale", "medium", 21.0)],
                     id="silent-device-stale-after-15s"),
        pytest.param([WaveChunk(Channel.PLETH, 0, 125.0, [0.0] * 32, "mon"), 14.0, 15.0],
                     [("raise", "tech.mon.stale", "medium", 15.0)], id="waves-prove-liveness"),
        pytest.param([series(HR, 80, 0, 5), status(DeviceState.STOPPED, 6), 100.0], [],
                     id="stopped-on-purpose-no-alarm"),
        # issue 12: a device thread stuck opening its port must not hide behind CONNECTING
        pytest.param([status(DeviceState.CONNECTING, 0), 14.9, 15.0, 100.0],
                     [("raise", "tech.mon.disconnected", "medium", 15.0)],
                     id="stuck-connecting-alarmed-after-15s"),
        pytest.param([status(DeviceState.CONNECTING, 0), status(DeviceState.DISCONNECTED, 1),
                      status(DeviceState.CONNECTING, 11), 14.9, rd(HR, 80, 14.95)],
                     [("raise", "tech.mon.disconnected", "medium", 1.0),
                      ("clear", "tech.mon.disconnected", "medium", 14.95)],
                     id="retrying-connects-streams-in-time"),
    ],
)
def test_device_link_alarms(eng, steps, expected):
    events = play(eng, steps)
    assert summary(events) == expected
    assert all(e.kind is AlarmKind.TECHNICAL for e in events)


def test_technical_alarms_do_not_latch(eng):
    play(eng, [status(DeviceState.DISCONNECTED, 0), status(DeviceState.STREAMING, 5)])
    eng.raise_technical("tech.disk", "high", "Database write failed", 6 * S)
    (ev,) = eng.clear_technical("tech.disk", 7 * S)
    assert not ev.latched
    assert eng.active() == []


def pump(t_s: float, *alarms: PumpAlarm, state: PumpRunState = PumpRunState.RUNNING
         ) -> PumpState:
    return PumpState(round(t_s * S), state, rate_ml_h=52.5, alarms=alarms, source="pump1")


@pytest.mark.parametrize(
    ("alarm", "key", "priority", "text"),
    [
        pytest.param(PumpAlarm("occlusion", "b10"), "tech.pump1.pump.occlusion", H, "OCCLUSION",
                     id="occlusion-high"),
        pytest.param(PumpAlarm("air_in_line", "AL_AIR"), "tech.pump1.pump.air_in_line", H,
                     "AIR IN LINE", id="air-high"),
        pytest.param(PumpAlarm("end", "A?E", high_priority=False), "tech.pump1.pump.end", L,
                     "END", id="infusion-complete-low"),
        pytest.param(PumpAlarm("unclassified", "E42", "code 42"),
                     "tech.pump1.pump.unclassified.E42", H, "'E42'",
                     id="unclassified-kept-with-raw-code"),
        pytest.param(PumpAlarm("unclassified", "a=0x13", high_priority=False),
                     "tech.pump1.pump.unclassified.a_0x13", M, "'a=0x13'",
                     id="unclassified-medium-by-flag"),
    ],
)
def test_pump_alarms(eng, alarm, key, priority, text):
    (ev,) = eng.evaluate([pump(0, alarm, state=PumpRunState.ALARM)])
    assert (ev.action, ev.key, ev.priority, ev.kind) == (RAISE, key, priority,
                                                         AlarmKind.TECHNICAL)
    assert text in ev.message
    assert eng.evaluate([pump(1, alarm, state=PumpRunState.ALARM)]) == []  # still present
    (clr,) = eng.evaluate([pump(2)])
    assert (clr.action, clr.key) == (CLEAR, key)


def test_pump_stopped_by_undescribed_alarm(eng):
    (ev,) = eng.evaluate([pump(0, state=PumpRunState.ALARM)])
    assert (ev.key, ev.priority) == ("tech.pump1.pump.alarm", H)


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        pytest.param([("raise", "high"), ("raise", "high")], [("raise", "high")],
                     id="raise-is-idempotent"),
        pytest.param([("raise", "medium"), ("raise", "high")],
                     [("raise", "medium"), ("escalate", "high")], id="re-prioritise-up"),
        pytest.param([("raise", "high"), ("raise", "low")],
                     [("raise", "high"), ("de-escalate", "low")], id="re-prioritise-down"),
        pytest.param([("raise", "medium"), ("clear", None), ("clear", None)],
                     [("raise", "medium"), ("clear", "medium")], id="clear-is-idempotent"),
    ],
)
def test_session_technical_alarms(eng, calls, expected):
    events = []
    for i, (what, prio) in enumerate(calls):
        if what == "raise":
            events += eng.raise_technical("tech.dose_discrepancy", prio,
                                          "Delivered dose differs from the pump", i * S)
        else:
            events += eng.clear_technical("tech.dose_discrepancy", i * S)
    assert [(str(e.action), str(e.priority)) for e in events] == expected


@pytest.mark.parametrize(
    ("key", "priority", "message", "reason"),
    [
        pytest.param("disk", "high", "x", "tech.disk_full", id="key-without-tech-prefix"),
        pytest.param("tech.", "high", "x", "tech.disk_full", id="empty-key"),
        pytest.param("tech.disk", "urgent", "x", "low, medium or high", id="bad-priority"),
        pytest.param("tech.disk", "high", " ", "needs a message", id="blank-message"),
    ],
)
def test_raise_technical_refused(eng, key, priority, message, reason):
    with pytest.raises(AlarmCommandError, match=reason):
        eng.raise_technical(key, priority, message, 0)


# ---------------------------------------------------------------- outputs


def test_active_sorted_by_priority_then_age(eng):
    play(eng, [rd(SBP, 185, 0), rd(MAP, 55, 1), rd(DBP, 125, 2)])
    assert [(a.key, a.priority) for a in eng.active() if a.kind is not AlarmKind.ADVISORY] == [
        ("nibp_dia.high", H), ("nibp_sys.high", M), ("nibp_mean.low", M)]


def test_subscriber_error_is_isolated(eng, caplog):
    got_a: list[AlarmEvent] = []
    got_b: list[AlarmEvent] = []

    def broken(ev: AlarmEvent) -> None:
        raise RuntimeError("disk full")

    eng.subscribe(got_a.append)
    unsubscribe = eng.subscribe(broken)
    eng.subscribe(got_b.append)
    returned = play(eng, [series(SPO2, 86, 0, 10)])
    assert [e.key for e in returned] == ["spo2.low"]
    keys = [e.key for e in got_a]
    assert keys == [e.key for e in got_b] == ["spo2.low", "tech.alarm_engine.subscriber"]
    assert eng.stats()["subscriber_errors"] == 2
    assert "disk full" in caplog.text
    # evaluation goes on; the technical alarm clears 30 s after the last failure
    unsubscribe()
    play(eng, [rd(SPO2, 97, 11)])
    assert "tech.alarm_engine.subscriber" in [a.key for a in eng.active()]
    eng.tick(41 * S)
    assert "tech.alarm_engine.subscriber" not in [a.key for a in eng.active()]


def test_subscriber_may_call_back_into_engine_and_order_holds(eng):
    seen: list[int] = []

    def ack_everything(ev: AlarmEvent) -> None:
        seen.append(ev.event_id)
        if ev.action is RAISE:
            eng.acknowledge(ev.key, ev.t_us)

    eng.subscribe(ack_everything)
    play(eng, [series(SPO2, 90, 0, 10)])
    assert seen == [1, 2]
    assert eng.active()[0].acknowledged


def test_evaluate_with_now_also_ticks(eng):
    events = eng.evaluate([rd(SPO2, 90, 0)], now_us=10 * S)
    assert summary(events) == [("raise", "spo2.low", "medium", 10.0)]


def test_thread_safety_smoke(eng):
    """Several device threads evaluate while the GUI thread acknowledges; events arrive
    at subscribers once each, in id order, and no thread hangs."""
    delivered: list[int] = []

    def recorder(ev: AlarmEvent) -> None:
        sum(range(300))  # a subscriber that takes a little time widens any ordering race
        delivered.append(ev.event_id)

    eng.subscribe(recorder)
    returned: list[AlarmEvent] = []
    ret_lock = threading.Lock()
    errors: list[BaseException] = []
    # NIBP channels have no delay and no hysteresis: every other reading raises or clears
    chans = [(SPO2, 85, 97, 30), (SBP, 205, 120, 1), (DBP, 125, 70, 1), (MAP, 140, 90, 1)]
    start = threading.Barrier(len(chans) + 1)
    done = threading.Event()

    def device(ch: Channel, bad: float, good: float, period: int, src: str) -> None:
        try:
            start.wait(timeout=5)
            for t in range(600):
                v = bad if (t // period) % 2 == 0 else good
                evs = eng.evaluate([Reading(ch, float(v), t * S, src)])
                with ret_lock:
                    returned.extend(evs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def gui() -> None:
        try:
            start.wait(timeout=5)
            t = 0
            while not done.is_set():
                t += 1
                evs = eng.acknowledge_all(t * 1000, user="gui")
                eng.active()
                eng.audio_state()
                with ret_lock:
                    returned.extend(evs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(*c, f"dev{i}"), name=f"dev{i}")
               for i, c in enumerate(chans)]
    g = threading.Thread(target=gui, name="gui")
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for th in (*threads, g):
            th.start()
        for th in threads:
            th.join(timeout=20)
        done.set()
        g.join(timeout=20)
    finally:
        sys.setswitchinterval(old)
    assert not any(th.is_alive() for th in (*threads, g)), "a thread hung"
    assert errors == []
    ids = sorted(e.event_id for e in returned)
    assert ids == list(range(1, len(ids) + 1))
    assert delivered == ids  # every event delivered once, in order
    assert sum(1 for e in returned if e.action is RAISE) >= len(chans)


def test_data_from_a_pump_in_a_rack_keeps_its_link_alive() -> None:
    """B. Braun racks and Fresenius bases report per pump ("pump/slot11"), the link state
    for "pump": the stale watchdog must credit the pump's data to its link."""
    from kapmonitor.model import DeviceState, DeviceStatus, PumpRunState, PumpState

    eng = AlarmEngine()
    t = 1_000_000_000_000
    eng.evaluate([DeviceStatus("pump", DeviceState.STREAMING, t)])
    for k in range(12):  # a PumpState every 5 s for a minute
        eng.evaluate([PumpState(t + k * 5_000_000, PumpRunState.RUNNING, 52.5,
                                source="pump/slot11")])
        eng.tick(t + k * 5_000_000 + 4_000_000)
    assert not [a for a in eng.active() if a.key.startswith("tech.pump")]


def test_pump_alarm_that_stopped_the_infusion_latches_until_acknowledged(eng):
    """Issue 13 item 5: an occlusion that cleared itself was gone before anyone saw it."""
    occl = PumpAlarm("occlusion", "INA3,1")
    (ev,) = eng.evaluate([pump(0, occl, state=PumpRunState.ALARM)])
    assert ev.message.startswith("PUMP OCCLUSION \u2014 check pump")
    (clr,) = eng.evaluate([pump(5)])  # running again: the condition ended
    assert clr.action is CLEAR and clr.latched
    (a,) = eng.active()
    assert (a.key, a.present, a.latched, a.audible) == (ev.key, False, True, False)
    eng.acknowledge(ev.key, 6 * S, user="RN A")
    assert eng.active() == []


def test_pump_alarm_acknowledged_while_present_or_not_stopping_does_not_latch(eng):
    occl = PumpAlarm("occlusion", "b10")
    eng.evaluate([pump(0, occl, state=PumpRunState.ALARM)])
    eng.acknowledge("tech.pump1.pump.occlusion", S, user="RN A")
    eng.evaluate([pump(2)])
    near = PumpAlarm("near_end", "NE", high_priority=False)
    eng.evaluate([pump(3, near)])  # a notice while still running
    eng.evaluate([pump(4)])
    assert eng.active() == []


def test_unclassified_pump_alarm_reads_in_words_first(eng):
    (ev,) = eng.evaluate([pump(0, PumpAlarm("unclassified", "INA3,1", "pump alarm (type "
                                            "unknown)"), state=PumpRunState.ALARM)])
    assert ev.message.startswith("PUMP ALARM \u2014 check pump [pump1]")
    assert "'INA3,1'" in ev.message


def test_alarm_text_shows_the_current_and_the_worst_value(eng):
    """Issue 13 item 6: the text kept the onset value (SpO2 91) while the tile showed 88."""
    play(eng, [series(SPO2, 91, 0, 10), rd(SPO2, 89, 11), rd(SPO2, 90, 12)])
    (a,) = eng.active()
    assert a.message.startswith("SpO2 LOW 90 %") and "worst 89" in a.message
    assert a.value == 90
    events = play(eng, [rd(SPO2, 94, 13)])
    (clr,) = [e for e in events if e.action is CLEAR]
    assert "cleared at 94 %" in clr.message and "worst 89 %" in clr.message


def test_audio_off_needs_a_reason_is_recorded_and_ends_by_itself(eng):
    """Issue 13 item 4: a room mute was one click, no reason, no expiry, kept forever."""
    from kapmonitor.alarms import AlarmAction, AudioMode

    with pytest.raises(AlarmCommandError, match="say why"):
        eng.audio_off(0, " ")
    (ev,) = eng.audio_off(0, "patient asleep, nurse at the bedside", user="RN A", minutes=30)
    assert (ev.action, ev.kind, ev.user) == (AlarmAction.AUDIO_OFF, AlarmKind.SYSTEM, "RN A")
    assert "for 30 min" in ev.message and "patient asleep" in ev.message
    play(eng, [series(SPO2, 85, 1, 20)])
    st = eng.audio_state()
    assert st.mode is AudioMode.OFF and st.priority is not None  # visible, not sounding
    assert st.off_until_us == 30 * 60 * S
    events = play(eng, [30 * 60.0])
    assert [e.action for e in events if e.kind is AlarmKind.SYSTEM] == [AlarmAction.AUDIO_ON]
    assert eng.audio_state().mode is AudioMode.SOUNDING
