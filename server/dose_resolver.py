"""`"kl": x` in a steer entry -> the scale from the vector's dose curve
(vsteer/dose_curve.py). Every failure is a coded 400 before the engine."""

from __future__ import annotations

from vsteer.artifacts import SteeringVector
from vsteer.dose_curve import DoseCurve, DoseOutOfRange
from vsteer.server.control_protocol import SteerEntry
from vsteer.server.errors import APIError


def scale_for_kl(entry: SteerEntry, vector: SteeringVector, layers: list[int],
                 param: str) -> float:
    kl = float(entry.kl or 0.0)
    here = f"{param}.kl"
    if "scale" in entry.model_fields_set:
        raise APIError(400, f"give {param}.scale or {here}, not both", param=here,
                       code="conflicting_fields")
    if entry.op != "add":
        raise APIError(400, f"{here} applies to op 'add' only (the curve is measured for it)",
                       param=here, code="field_not_applicable")
    raw = vector.provenance.get("dose")
    if raw is None:
        raise APIError(400, f"vector {entry.vector!r} has no dose curve (run `vsteer vector "
                       "calibrate`)", param=here, code="vector_not_calibrated")
    curve = DoseCurve.from_dict({k: v for k, v in raw.items() if k != "source"})
    if sorted(layers) != sorted(curve.layers):
        raise APIError(400, f"{here} needs the layers the dose curve was measured on "
                       f"({curve.layers})", param=here, code="field_not_applicable")
    try:
        return curve.scale_for(kl)
    except DoseOutOfRange as e:
        raise APIError(400, str(e), param=here, code="kl_out_of_range") from None
