"""Fault injection, for tests of failures a single machine does not produce by itself
(one tensor-parallel rank that cannot read an artifact the others can).

    VSTEER_FAULTS="load:rank=2:match=faulty"   artifact loads on TP rank 2 whose path
                                               contains "faulty" raise OSError
Several faults are separated by ";". Unset (the default), nothing is injected.
"""

from __future__ import annotations

import os
from functools import cache

ENV = "VSTEER_FAULTS"


@cache
def _load_faults(spec: str) -> list[tuple[int, str]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        kind, *fields = item.split(":")
        opts = dict(f.split("=", 1) for f in fields)
        if kind != "load" or set(opts) - {"rank", "match"}:
            raise ValueError(f"{ENV}: cannot parse {item!r}")
        out.append((int(opts.get("rank", -1)), opts.get("match", "")))
    return out


def maybe_fail_load(path: str, rank: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for want_rank, match in _load_faults(spec):
        if want_rank in (-1, rank) and match in path:
            raise OSError(f"injected fault ({ENV}): cannot read {path} on rank {rank}")
