"""Nomenclature codes of Philips IntelliVue Data Export that KAP Monitor uses.

Numbers only, from shared/protocols/philips-intellivue-mib.md: object classes and attribute
groups (§4.1), action/event/command codes (§2.2, §3.3, §4.1), MeasurementState bits (§5.3),
SaSpec flags (§5.4), and the physio ids, labels and units of the KAP parameter set (§6).
Which physio id feeds which model channel is the device layer's decision
(``drivers/devices/intellivue.py``), not this table's.
"""

from __future__ import annotations

# Session SPDU types (§2)
CN_SPDU = 0x0D  # Association Request
AC_SPDU = 0x0E  # Association Result (accept)
RF_SPDU = 0x0C  # Refuse
FN_SPDU = 0x09  # Release Request
DN_SPDU = 0x0A  # Release Result
AB_SPDU = 0x19  # Abort
DATA_EXPORT = 0xE1  # SPpdu of a data-export message

# ROapdus types (§2.2)
ROIV = 1
RORS = 2
ROER = 3
ROLRS = 5
# Linked-result states (§2.2)
RORLS_FIRST = 1
RORLS_NOT_FIRST_NOT_LAST = 2
RORLS_LAST = 3

# Command types (§2.2)
CMD_EVENT_REPORT = 0
CMD_CONFIRMED_EVENT_REPORT = 1
CMD_GET = 3
CMD_SET = 4
CMD_CONFIRMED_SET = 5
CMD_CONFIRMED_ACTION = 7

# Actions and events (§3.3, §4.1)
NOM_NOTI_MDS_CREAT = 0x0D06
NOM_ACT_POLL_MDIB_DATA = 0x0C16
NOM_ACT_POLL_MDIB_DATA_EXT = 0xF13B

# Partitions (§2.2)
NOM_PART_OBJ = 1
NOM_PART_SCADA = 2

# Object classes, partition 1 (§4.1)
NOM_MOC_VMO_METRIC_NU = 0x0006
NOM_MOC_VMO_METRIC_SA_RT = 0x0009
NOM_MOC_VMS_MDS = 0x0021
NOM_MOC_PT_DEMOG = 0x002A
NOM_MOC_VMO_AL_MON = 0x0036

# Attribute groups (§4.1); 0 = all attributes
NOM_ATTR_GRP_ALL = 0x0000
NOM_ATTR_GRP_METRIC_VAL_OBS = 0x0803
NOM_ATTR_GRP_VMO_STATIC = 0x0811

# MeasurementState bits (§5.3)
MS_INVALID = 0x8000
MS_QUESTIONABLE = 0x4000
MS_UNAVAILABLE = 0x2000
MS_CALIBRATION_ONGOING = 0x1000
MS_TEST_DATA = 0x0800
MS_DEMO_DATA = 0x0400
MS_VALIDATED_DATA = 0x0080
MS_EARLY_INDICATION = 0x0040
MS_MSMT_ONGOING = 0x0020
MS_IN_ALARM = 0x0002
MS_AL_INHIBITED = 0x0001

# SaSpec flags (§5.4)
SA_SMOOTH_CURVE = 0x8000
SA_DELAYED_CURVE = 0x4000
SA_STATIC_SCALE = 0x2000
SA_EXT_VAL_RANGE = 0x1000

# PollProfileSupport / PollProfileExt option bits (§3.1)
P_OPT_DYN_CREATE_OBJECTS = 0x40000000
P_OPT_DYN_DELETE_OBJECTS = 0x20000000
POLL_EXT_PERIOD_NU_1SEC = 0x80000000
POLL_EXT_PERIOD_RTSA = 0x08000000
POLL_EXT_ENUM = 0x04000000
POLL_EXT_NU_PRIO_LIST = 0x02000000

# Physio ids, partition 2 (§6): numerics
NOM_ECG_CARD_BEAT_RATE = 0x4182
NOM_PLETH_PULS_RATE = 0x4822
NOM_PULS_RATE = 0x480A
NOM_PULS_OXIM_SAT_O2 = 0x4BB8
NOM_PRESS_BLD_NONINV = 0x4A04
NOM_PRESS_BLD_NONINV_SYS = 0x4A05
NOM_PRESS_BLD_NONINV_DIA = 0x4A06
NOM_PRESS_BLD_NONINV_MEAN = 0x4A07
NOM_RESP_RATE = 0x500A
NOM_AWAY_RESP_RATE = 0x5012
NOM_AWAY_CO2_ET = 0x50B0
NOM_AWAY_CO2_INSP_MIN = 0x50BA
NOM_TEMP = 0x4B48
NOM_TEMP_CORE = 0x4B60
NOM_TEMP_ESOPH = 0x4B64
NOM_TEMP_SKIN = 0x4B74
NOM_TEMP_TYMP = 0x4B78
NOM_TEMP_RECT = 0xE004
NOM_METRIC_NOS = 0xEFFF
# Physio ids (§6): waves
NOM_PLETH = 0x4BB4
NOM_ECG_ELEC_POTL = 0x0100
NOM_ECG_ELEC_POTL_II = 0x0102
NOM_AWAY_CO2 = 0x50AC
NOM_RESP = 0x5000


def label(physio_id: int) -> int:
    """The TextId label of a partition-2 physio id (§6: 0x00020000 + id)."""
    return (NOM_PART_SCADA << 16) | physio_id


# Units (§6)
NOM_DIM_DIMLESS = 0x0200
NOM_DIM_PERCENT = 0x0220
NOM_DIM_BEAT_PER_MIN = 0x0AA0
NOM_DIM_PULS_PER_MIN = 0x0AC0
NOM_DIM_RESP_PER_MIN = 0x0AE0
NOM_DIM_KILO_PASCAL = 0x0F03
NOM_DIM_MMHG = 0x0F20
NOM_DIM_FAHR = 0x1140
NOM_DIM_MILLI_VOLT = 0x10B2
NOM_DIM_DEGC = 0x17A0
