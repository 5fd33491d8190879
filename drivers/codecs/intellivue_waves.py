"""Sample arrays of Philips IntelliVue Data Export: raw counts <-> channel units.

shared/protocols/philips-intellivue-mib.md §5.4 gives the scaling, and this module follows
it with one deliberate difference:

1. the SaObsValue bytes are big-endian unsigned samples of ``SaSpec.sample_size`` bits
   (8 or 16);
2. each is masked to its low ``SaSpec.significant_bits`` (OpenICE's mask, not VSCaptureMP's
   signed reinterpretation, as the document advises);
3. the object's ScaleRangeSpec16 maps raw linearly to physical:
   ``physical = lower_abs + (raw - lower_scaled) * (upper_abs - lower_abs) /
   (upper_scaled - lower_scaled)``;
4. the unit is the object's NOM_ATTR_UNIT_CODE (the device layer converts to the channel's
   unit).

The difference: the document suggests clamping raw into [lower_scaled, upper_scaled] first
(VSCaptureMP). Clamping would rewrite a sample silently (CONVENTIONS 19), so raw values
outside the range are extrapolated by the same line and reported, and the device layer
flags the block QUESTIONABLE (``CLAMP_TO_SCALED_RANGE = False``). If a scale bound is
NaN/INF or the scaled bounds are equal the block cannot be scaled and ``scale_samples``
returns None (the document's alternative, keeping raw counts, would put counts into a
channel whose unit is mV or mmHg).
The meaning of the bits above ``significant_bits`` under SA_EXT_VAL_RANGE is not
established (§5.4 [?]); they are masked off like the others.
"""

from __future__ import annotations

import math

import numpy as np

from .intellivue_attributes import SaSpec, ScaleRangeSpec16

__all__ = ["CLAMP_TO_SCALED_RANGE", "samples_to_bytes", "scale_samples"]

CLAMP_TO_SCALED_RANGE = False


def _line(scale: ScaleRangeSpec16) -> tuple[float, float, int, int] | None:
    lo_a, hi_a = scale.lower_absolute.value, scale.upper_absolute.value
    lo_s, hi_s = scale.lower_scaled, scale.upper_scaled
    if hi_s == lo_s or hi_a == lo_a or not (math.isfinite(lo_a) and math.isfinite(hi_a)):
        return None
    return lo_a, hi_a, lo_s, hi_s


def _apply(raw: np.ndarray, scale: ScaleRangeSpec16) -> np.ndarray:
    """The §5.4 line evaluated exactly in integers on the FLOAT mantissas, with one final
    division, so a raw count that stands for 0.0 gives exactly 0.0 (not 4e-16)."""
    lo, hi = scale.lower_absolute, scale.upper_absolute
    e = min(lo.exponent, hi.exponent)
    lo_m = lo.mantissa * 10 ** (lo.exponent - e)
    hi_m = hi.mantissa * 10 ** (hi.exponent - e)
    span_s = scale.upper_scaled - scale.lower_scaled
    if max(abs(lo_m), abs(hi_m)) * (abs(span_s) + (1 << 16)) * 4 > (1 << 62):
        # exponents far apart: integers would overflow int64; evaluate in floats
        lo_a, hi_a = lo.value, hi.value
        return lo_a + (raw - scale.lower_scaled) * ((hi_a - lo_a) / span_s)
    num = lo_m * span_s + (raw - scale.lower_scaled) * (hi_m - lo_m)
    if e < 0:
        return num / (span_s * 10 ** (-e))
    return num * (10**e / span_s)


def scale_samples(
    data: bytes, spec: SaSpec, scale: ScaleRangeSpec16
) -> tuple[np.ndarray | None, bool]:
    """Raw SaObsValue bytes -> (physical values in the object's unit, whether any raw value
    lay outside the scaled range) (steps 1-3 above). The values are None when the bytes do
    not fit the spec or the scale is unusable."""
    if spec.sample_size not in (8, 16) or len(data) % (spec.sample_size // 8):
        return None, False
    line = _line(scale)
    if line is None:
        return None, False
    lo_s, hi_s = line[2], line[3]
    raw = np.frombuffer(data, dtype=">u1" if spec.sample_size == 8 else ">u2").astype(np.int64)
    bits = spec.significant_bits
    if 0 < bits < spec.sample_size:
        raw &= (1 << bits) - 1
    outside = bool(raw.size) and (raw.min() < min(lo_s, hi_s) or raw.max() > max(lo_s, hi_s))
    if outside and CLAMP_TO_SCALED_RANGE:
        raw = np.clip(raw, min(lo_s, hi_s), max(lo_s, hi_s))
    return _apply(raw, scale), bool(outside)


def samples_to_bytes(values: np.ndarray, spec: SaSpec, scale: ScaleRangeSpec16) -> bytes:
    """Physical values -> SaObsValue bytes (the simulator's side): the inverse line, rounded
    to the nearest count. A value outside what ``significant_bits`` can carry is refused
    rather than clipped; the simulator chooses scales wide enough for its signals."""
    line = _line(scale)
    if line is None or spec.sample_size not in (8, 16):
        raise ValueError(f"cannot encode samples with {spec} / {scale}")
    lo_a, hi_a, lo_s, hi_s = line
    raw = np.rint(
        lo_s + (np.asarray(values, dtype=np.float64) - lo_a) * ((hi_s - lo_s) / (hi_a - lo_a))
    ).astype(np.int64)
    top = (1 << (spec.significant_bits or spec.sample_size)) - 1
    if raw.size and (raw.min() < 0 or raw.max() > top):
        raise ValueError(f"samples outside 0..{top} counts: {raw.min()}..{raw.max()}")
    return raw.astype(">u1" if spec.sample_size == 8 else ">u2").tobytes()
