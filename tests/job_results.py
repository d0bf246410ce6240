"""Tests end a job-table step the way the runtime does: results posted to a
ResultMailbox and read by its thread; `finish_step` also waits for that read."""

from __future__ import annotations

import threading

import torch

from vsteer.plugins.job_table import JobTable
from vsteer.plugins.result_mailbox import ResultMailbox

_MAILBOXES: dict[int, ResultMailbox] = {}


def finish_step(table: JobTable) -> None:
    mb = _MAILBOXES.get(table.capacity)
    if mb is None:
        mb = _MAILBOXES[table.capacity] = ResultMailbox(table.capacity, torch.device("cpu"),
                                                        threading.RLock())
    table.finish(mb)
    mb.drain()
