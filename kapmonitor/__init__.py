"""KAP Monitor core: what a session is, independent of any GUI or device.

A secondary display and record for ketamine infusion rooms, not a primary alarm device.
"""

__version__ = "0.1.0"
