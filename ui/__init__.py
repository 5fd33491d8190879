"""The bedside window (DESIGN §6): the only package that imports Qt widgets or pyqtgraph.

Entry points the command line wires: :class:`~kapmonitor.ui.main_window.MainWindow`,
:func:`~kapmonitor.ui.main_window.run_app`, :func:`~kapmonitor.ui.main_window.grab_png` and
:class:`~kapmonitor.ui.setup_dialog.SetupDialog` (import them from their modules: importing
this package stays cheap). Importing it refuses a Qt binding known to crash a long-running
window (:mod:`kapmonitor.ui._qt_check`).
"""

from ._qt_check import check_binding

check_binding()
