"""One process-wide counter for step serials and rows epochs, so no two plans (nor two
steps, nor two slot writes) ever share a value that a kernel could have cached on."""

from __future__ import annotations

import itertools
import time

_STAMPS = itertools.count(time.time_ns())


def next_stamp() -> int:
    return next(_STAMPS)
