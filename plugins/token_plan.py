"""Mapping of tokens to control rows: one int32 per token, like vLLM's LoRA.

A request with controls owns up to two rows (its prompt-position entries and its
generated-position entries), allocated when first needed and kept until it finishes;
a row lists up to K (slot, scale, op) entries. Per step only the token → row map is
rewritten. Tokens of requests without controls keep row -1 and are never touched.
"""

from __future__ import annotations

import torch

from vsteer.kernels.stamps import next_stamp
from vsteer.plugins.device_buffer import HostDeviceBuffer


class TokenPlan:
    def __init__(self, max_tokens: int, max_rows: int, k: int, device: torch.device) -> None:
        self.max_tokens, self.max_rows = max_tokens, max_rows
        self.token_row = HostDeviceBuffer(torch.full((max_tokens,), -1, dtype=torch.int32),
                                          device)  # [T_max]
        self.row_slot = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.int32),
                                         device)  # [R, K]
        self.row_scale = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.float32),
                                          device)  # [R, K]
        self.row_op = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.int32),
                                       device)  # [R, K]
        # CPU, never on device: (steered tokens this step, step serial, rows epoch, job
        # rows in use). The serial changes every step, the epoch whenever a row is
        # (re)written, so kernels may cache per-step work on the serial and per-row work
        # on the epoch; the job table (plugins/job_table.py) writes the last entry.
        self.step = torch.zeros(4, dtype=torch.int64)
        self.epoch = next_stamp()
        self._free_rows = list(range(max_rows - 1, -1, -1))
        self.num_active = 0
        self._dirty = 0  # token_row[:_dirty] may hold rows from this step

    def begin(self, num_tokens: int) -> None:
        if num_tokens > self.max_tokens:
            raise RuntimeError(f"step has {num_tokens} tokens, plan holds {self.max_tokens}")
        if self._dirty:  # the device rows went back to -1 in reset(); now the host's
            self.token_row.np[: self._dirty] = -1
            self._dirty = 0
        self.num_active = 0

    @property
    def free_rows(self) -> int:
        return len(self._free_rows)

    def alloc_row(self, entries: list[tuple[int, float, int]]) -> int:
        """entries: (slot, scale, op code), at most K. Returns the row index."""
        if not self._free_rows:
            raise RuntimeError(f"all {self.max_rows} control rows are in use")
        r = self._free_rows.pop()
        n = len(entries)
        self.row_slot.np[r, :n] = [e[0] for e in entries]
        self.row_slot.np[r, n:] = 0
        self.row_scale.np[r, :n] = [e[1] for e in entries]
        self.row_scale.np[r, n:] = 0
        self.row_op.np[r, :n] = [e[2] for e in entries]
        self.row_op.np[r, n:] = 0
        for buf in (self.row_slot, self.row_scale, self.row_op):
            buf.upload_row(r)
        self.epoch = next_stamp()
        return r

    def free_row(self, r: int) -> None:
        if r >= 0:
            self._free_rows.append(r)

    def assign(self, start: int, end: int, row: int) -> None:
        if row >= 0 and end > start:
            self.token_row.np[start:end] = row
            self.num_active += end - start
            self._dirty = max(self._dirty, end)

    def commit(self, num_tokens: int) -> None:
        self.step[0] = self.num_active
        self.step[1] = next_stamp()
        self.step[2] = self.epoch
        self.token_row.upload(max(self._dirty, num_tokens))

    def invalidate(self) -> None:
        """Slot contents changed inside this step (a decision fired): new serial and
        epoch, so kernels drop what they cached for this step and these rows."""
        self.epoch = next_stamp()
        self.step[1] = next_stamp()
        self.step[2] = self.epoch

    def reset(self) -> None:
        """Back to idle: every token untouched (what warm-up dummy runs see). A device
        write: the host rows may still be in flight to the device (non-blocking copy),
        so they are cleared at the next begin()."""
        if self._dirty:
            self.token_row.device[: self._dirty] = -1
        self.step[0] = 0
        self.step[1] = next_stamp()
        self.num_active = 0
