"""Render the documentation screenshots offscreen (docs/screenshots/*.png):

- ``live_alarm.png``: the live view at 1280x800, 33 min into an infusion, with the pressor
  response on the trends, notes and cues as markers, and a high-priority SpO2 alarm;
- ``notes_panel.png``: the notes panel with cues, an assessment and an amended note;
- ``setup_dialog.png`` / ``setup_refused.png``: the setup dialog with a warning to tick, and
  with a refused weight;
- ``replay.png``: the replay window on a recorded 70-minute session, the cursor during a
  desaturation alarm mid-infusion; ``report_page1.png``: page 1 of that session's PDF.

    .venv/bin/python -m tests.ui.screenshots [--only=live|replay] [OUT_DIR]

The history is synthetic (tests/ui/synthetic.py) and goes through the session's bus; the
last seconds come from a simulated GE S/5 and B. Braun pump on pseudo-terminals.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from kapmonitor.cues import CueLibrary
from kapmonitor.drivers.devices.bbraun import BBraunHost
from kapmonitor.drivers.devices.ge_s5 import GeS5Host
from kapmonitor.drivers.sim.feed import ProgrammedPump
from kapmonitor.drivers.sim.peers.bbraun import BBraunPeer
from kapmonitor.drivers.sim.peers.ge_s5 import GeS5Peer
from kapmonitor.drivers.sim.server import PtyServer
from kapmonitor.drivers.transport import DeviceRunner
from kapmonitor.model import Channel, PumpRunState, PumpState, Reading, WaveChunk, now_us
from kapmonitor.scales import load_scales
from kapmonitor.session import LiveSession, Phase, SessionConfig
from kapmonitor.store import Store
from kapmonitor.ui import theme
from kapmonitor.ui.main_window import MainWindow
from kapmonitor.ui.setup_dialog import SetupDialog

from .synthetic import (
    CONTINUOUS,
    NIBP,
    RealisticVitals,
    publish_history,
    scenario,
    wave_samples,
)

_US = 1_000_000
_MIN = 60_000_000


class _StartedAt:
    """Host time, except the first reading (the session's opening) is ``start_us``."""

    def __init__(self, start_us: int) -> None:
        self.first: int | None = start_us

    def __call__(self) -> int:
        if self.first is not None:
            t, self.first = self.first, None
            return t
        return now_us()


def _pump_events(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def live_view(app: QApplication, out: Path, work: Path) -> None:
    store = Store.open(str(work / "shots.sqlite"))
    cfg = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                        weight_kg=70.0, dose_mg_per_kg=0.5, duration_min=40,
                        concentration_mg_ml=1.0, demo=True)
    infusion_min, baseline_min = 33.0, 9.0
    start_us = now_us() - int((infusion_min + baseline_min) * _MIN)
    # the session was opened at the start of the synthetic baseline, not now
    session = LiveSession(store, cfg, clock=_StartedAt(start_us)).start()
    lib = CueLibrary.defaults()
    settings = QSettings(str(work / "ui.ini"), QSettings.Format.IniFormat)
    win = MainWindow(session, demo=True, cue_library=lib, settings=settings,
                     enable_audio=False)
    win.resize(1280, 800)
    win.show()
    servers: list[PtyServer] = []
    try:
        now = session.clock()
        t0 = publish_history(session.bus.publish, now, baseline_min=baseline_min,
                             infusion_min=infusion_min,
                             rate_ml_h=52.5, vtbi_ml=35.0, desat_from_min=infusion_min - 0.9)
        _pump_events(app, 0.5)
        notes = win.notes
        for minutes, cue_id in ((-6, "SET-ROOM"), (-3, "INT-STATE"), (0.2, "MUS-START"),
                                (2.5, "BR-SLOW"), (11, "IMG-SAFE"), (24, "RA-SAFE"),
                                (27, "OBS-TEARFUL")):
            cue = lib[cue_id]
            f = cue.annotation_fields()
            notes.log(f["kind"], f["text"], code=f["code"], marker=cue.label,
                      t_us=t0 + int(minutes * _MIN))
        moaas = load_scales()["moaa-s"].score([4])
        f = moaas.annotation_fields()
        notes.log(f["kind"], f["text"], code=f["code"], value=f["value"], marker="MOAA/S 4",
                  t_us=t0 + 15 * _MIN)
        first = notes.log("observation", "Says the room feels far away; calm",
                          t_us=t0 + int(19.5 * _MIN))
        notes.log("observation", "BP up, asymptomatic; recheck in 5 min",
                  t_us=t0 + int(25.2 * _MIN))
        deadline = time.monotonic() + 10
        while first.entry_id is None and time.monotonic() < deadline:
            _pump_events(app, 0.05)
        if first.entry_id is not None:
            notes.select_entry(first)
            notes.begin_amend()
            notes.note.setText("Says the room feels far away; calm, smiling")
            notes._enter()

        vitals = RealisticVitals({k: v for k, v in scenario(infusion_min).items()
                                  if k not in NIBP and k is not Channel.PULSE})
        vitals.values[Channel.SPO2] = 85.0
        monitor = PtyServer(GeS5Peer(vitals), name="monitor").start()
        servers.append(monitor)
        pump_prog = ProgrammedPump(rate_ml_h=52.5, vtbi_ml=35.0)
        pump_prog.start(t0)
        pump = PtyServer(BBraunPeer(pump_prog), name="pump").start()
        servers.append(pump)
        session.attach("monitor", DeviceRunner(monitor.url, GeS5Host("monitor"),
                                               session.bus.publish), protocol="ge-s5")
        session.attach("pump", DeviceRunner(pump.url, BBraunHost("pump"),
                                            session.bus.publish), protocol="bbraun-bcc")
        _pump_events(app, 11.0)  # a full 10-s sweep of live waves
        notes.timeline.clearSelection()
        win.grab_png(out / "live_alarm.png")
        if first.item is not None:
            first.item.setExpanded(True)  # the amended note with its original under it
        notes.category_box.setCurrentIndex(notes.category_box.findData("reassurance"))
        _pump_events(app, 0.2)
        notes.grab().save(str(out / "notes_panel.png"))
        print("frames:", win.frame_stats())
    finally:
        win.quit_now()
        win.shutdown()
        session.close(author="screenshots")
        for s in servers:
            s.stop()
        win.deleteLater()
        app.processEvents()
        store.close()


class _SetClock:
    """A clock the script moves: the recorded session runs in the past, in script time."""

    def __init__(self, t_us: int) -> None:
        self.t = t_us

    def __call__(self) -> int:
        return self.t


def record_for_replay(db: Path) -> tuple[int, int]:
    """A 70-minute session recorded through the session's bus in script time: 10 min of
    baseline, the pump starting the infusion (35 mL at 52.5 mL/h, so it completes at 40 min
    and the session moves to emergence), the pressor response, NIBP every 5 min, pleth and
    capnogram, cues and notes (one amended), an assessment, a desaturation at 22 min that
    raises a high-priority alarm, acknowledged by the nurse, then recovery; closed at
    T+60. Returns (session id, t0)."""
    baseline_min, end_min = 10.0, 60.0
    t0 = now_us() - int((end_min + 30) * _MIN)
    clock = _SetClock(t0 - int(baseline_min * _MIN))
    store = Store.open(str(db))
    cfg = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                        protocol="KAP 0.5 mg/kg over 40 min", weight_kg=70.0,
                        dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0,
                        demo=True)
    session = LiveSession(store, cfg, clock=clock).start()
    lib = CueLibrary.defaults()
    notes: list[tuple[float, str, str, str, str]] = [
        (-6, "cue", "SET-ROOM", "", "RN Lee"), (-3, "cue", "INT-STATE", "", "Dr Osei"),
        (0.3, "cue", "MUS-START", "", "Dr Osei"), (2.5, "cue", "BR-SLOW", "", "Dr Osei"),
        (11, "cue", "IMG-SAFE", "", "Dr Osei"),
        (19.5, "observation", "", "Says the room feels far away; calm", "RN Lee"),
        (22.4, "observation", "", "SpO2 85 %: chin lift, O2 2 L/min by nasal cannula",
         "RN Lee"),
        (24, "cue", "RA-SAFE", "", "Dr Osei"),
        (25.2, "observation", "", "BP up, asymptomatic; recheck in 5 min", "RN Lee"),
        (27, "cue", "OBS-TEARFUL", "", "RN Lee"),
        (44, "observation", "", "Eyes open, oriented, talking about the music", "RN Lee"),
    ]
    pending = sorted(notes)
    ids: dict[float, int] = {}
    step = 5 * _US
    t = start = clock.t
    end = t0 + int(end_min * _MIN)
    acked = False
    vtbi, rate = 35.0, 52.5
    batch: list = []
    wave_next = {Channel.PLETH: t, Channel.CO2_WAVE: t}
    try:
        while t <= end:
            m = (t - t0) / _MIN
            v = scenario(m)
            if 22.0 <= m < 23.6:  # the desaturation, back after the airway manoeuvre
                v[Channel.SPO2] = 85 if m < 23.2 else 91
            if m > 40:  # after the infusion: pressures settle
                v[Channel.NIBP_SYS] = round(162 - (m - 40) * 1.2)
                v[Channel.HR] = round(91 - (m - 40) * 0.6)
            for ch in CONTINUOUS:
                batch.append(Reading(ch, float(v[ch]), t, "monitor"))
            if (t - start) % (300 * _US) == 0:  # NIBP every 5 min
                for ch in NIBP:
                    batch.append(Reading(ch, float(v[ch]), t, "monitor"))
            if t >= t0:
                vol = min(vtbi, rate * (t - t0) / 3.6e9)
                state = PumpRunState.RUNNING if vol < vtbi else PumpRunState.COMPLETE
                batch.append(PumpState(t, state, rate if state is PumpRunState.RUNNING
                                       else 0.0, vol, vtbi - vol, drug="ketamine",
                                       concentration_mg_ml=1.0, infusion_id=1,
                                       source="pump/slot11"))
            else:
                batch.append(PumpState(t, PumpRunState.STOPPED, 0.0, 0.0, vtbi,
                                       drug="ketamine", concentration_mg_ml=1.0,
                                       infusion_id=1, source="pump/slot11"))
            for ch, hz in ((Channel.PLETH, 100.0), (Channel.CO2_WAVE, 25.0)):
                n = round((t + step - wave_next[ch]) * hz / _US)
                if n > 0:
                    samples = wave_samples(ch, wave_next[ch], hz, n, 80.0, 13.0)
                    if ch is Channel.PLETH:
                        samples = samples * 40.0
                    batch.append(WaveChunk(ch, wave_next[ch], hz, samples, "monitor"))
                    wave_next[ch] += round(n * _US / hz)
            session.bus.publish(batch)
            batch = []
            clock.t = t
            while pending and t0 + int(pending[0][0] * _MIN) <= t:
                minutes, kind, code, text, author = pending.pop(0)
                when = t0 + int(minutes * _MIN)
                if kind == "cue" or code:
                    f = lib[code].annotation_fields()
                    fut = session.add_entry(f["kind"], f["text"], t_us=when, author=author,
                                            code=f["code"])
                else:
                    fut = session.add_entry(kind, text, t_us=when, author=author)
                ids[minutes] = fut.result(10)
                if minutes == 19.5:
                    session.amend_entry(ids[minutes], text="Says the room feels far away; "
                                        "calm, smiling", author="RN Lee").result(10)
            if not acked and m >= 22.6:
                acked = bool(session.acknowledge(user="RN Lee"))
            if abs(m - 15) < 0.05:
                a = load_scales()["moaa-s"].score([4])
                f = a.annotation_fields()
                session.add_entry(f["kind"], f["text"], t_us=t, author="RN Lee",
                                  code=f["code"], value=f["value"]).result(10)
            if abs(m - 50) < 0.05:
                session.set_phase(Phase.RECOVERY, t, author="RN Lee")
            t += step
        clock.t = end
        session.close(end, author="RN Lee")
        return session.session_id, t0
    finally:
        if not session.closed:
            session.close(author="screenshots")
        store.close()


def replay_and_report(app: QApplication, out: Path, work: Path) -> None:
    """``replay.png``: the replay window at 1280x800 on the recorded session with the cursor
    during the desaturation alarm mid-infusion; ``report_page1.png``: page 1 of its PDF."""
    from PySide6.QtCore import QSize
    from PySide6.QtPdf import QPdfDocument

    from kapmonitor.ui.replay_window import ReplayWindow
    from kapmonitor.ui.report import export_session

    db = work / "replay.sqlite"
    sid, t0 = record_for_replay(db)
    store = Store.open(str(db))
    try:
        win = ReplayWindow(store.engine, sid, at_us=t0 + int(22.5 * _MIN))
        win.resize(1280, 800)
        win.show()
        _pump_events(app, 0.3)
        win.set_cursor(t0 + int(22.5 * _MIN))
        _pump_events(app, 0.3)
        win.grab_png(out / "replay.png")
        win.shutdown()
        win.close()
        win.deleteLater()
        app.processEvents()
        pdf = work / "report.pdf"
        result = export_session(store.engine, sid, pdf)
        doc = QPdfDocument()
        doc.load(str(pdf))
        size = doc.pagePointSize(0)
        scale = 1240 / size.width()  # 150 dpi on A4
        img = doc.render(0, QSize(round(size.width() * scale), round(size.height() * scale)))
        img.save(str(out / "report_page1.png"))
        doc.close()
        print(f"report: {result.counts}")
    finally:
        store.close()


def setup_dialogs(app: QApplication, out: Path) -> None:
    defaults = SessionConfig(patient="KAP-0147", room="2", clinicians="RN Lee, Dr Osei",
                             dose_mg_per_kg=0.5, duration_min=40, concentration_mg_ml=1.0)
    for name, kg in (("setup_dialog.png", "160"), ("setup_refused.png", "900")):
        d = SetupDialog(None, demo=True, defaults=defaults)
        d.weight.setText(kg)
        d.weight2.setText(kg)
        d.show()
        _pump_events(app, 0.2)
        d.adjustSize()
        _pump_events(app, 0.2)
        d.grab().save(str(out / name))
        d.reject()
        d.deleteLater()
    app.processEvents()


def main(argv: list[str]) -> int:
    only = None
    if argv and argv[0].startswith("--only="):  # --only=live or --only=replay
        only, argv = argv[0].split("=", 1)[1], argv[1:]
    out = Path(argv[0]) if argv else Path("docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    theme.apply_theme(app)
    with tempfile.TemporaryDirectory() as tmp:
        if only in (None, "live"):
            live_view(app, out, Path(tmp))
            setup_dialogs(app, out)
        if only in (None, "replay"):
            replay_and_report(app, out, Path(tmp))
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
