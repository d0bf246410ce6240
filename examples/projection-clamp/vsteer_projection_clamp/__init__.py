"""`projection_clamp`: keep the component of the residual stream along a steering
vector's direction within [lo, hi], per request, at chosen layers and positions.

    "control": {"projection_clamp": {"vector": "joyful", "hi": 0.0}}

caps how much "joyful" the model's stream may carry (a one-sided clamp; `lo` alone
sets a floor). Unlike `steer` with op `add`, tokens already within the band are left
untouched bit for bit.
"""

from __future__ import annotations

from vsteer_projection_clamp.control import ProjectionClamp


def control() -> ProjectionClamp:
    """The entry point (`vsteer.controls`: projection_clamp)."""
    return ProjectionClamp()
