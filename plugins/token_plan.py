"""Per-step mapping of tokens to control rows: one int32 per token, like vLLM's LoRA.

Each request in the step gets up to two rows (its prompt-position entries and its
generated-position entries); a row lists up to K (slot, scale, op) entries. Tokens
of requests without controls keep row -1 and are never touched.
"""

from __future__ import annotations

import torch

from vsteer.plugins.device_buffer import HostDeviceBuffer


class TokenPlan:
    def __init__(self, max_tokens: int, max_rows: int, k: int, device: torch.device) -> None:
        self.max_tokens, self.max_rows, self.k = max_tokens, max_rows, k
        self.token_row = HostDeviceBuffer(torch.full((max_tokens,), -1, dtype=torch.int32),
                                          device)  # [T_max]
        self.row_slot = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.int32),
                                         device)  # [R, K]
        self.row_scale = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.float32),
                                          device)  # [R, K]
        self.row_op = HostDeviceBuffer(torch.zeros(max_rows, k, dtype=torch.int32),
                                       device)  # [R, K]
        # CPU, never on device: (steered tokens this step, step serial). The serial changes
        # whenever the tables do, so kernels may cache per-step work on it.
        self.step = torch.zeros(2, dtype=torch.int64)
        self.num_rows = 0
        self.num_active = 0
        self._dirty = 0  # token_row[:_dirty] may hold rows from this step

    def begin(self, num_tokens: int) -> None:
        if num_tokens > self.max_tokens:
            raise RuntimeError(f"step has {num_tokens} tokens, plan holds {self.max_tokens}")
        self.num_rows = 0
        self.num_active = 0

    def add_row(self, entries: list[tuple[int, float, int]]) -> int:
        """entries: (slot, scale, op code), at most K. Returns the row index."""
        r = self.num_rows
        self.num_rows += 1
        n = len(entries)
        self.row_slot.np[r, :n] = [e[0] for e in entries]
        self.row_slot.np[r, n:] = 0
        self.row_scale.np[r, :n] = [e[1] for e in entries]
        self.row_op.np[r, :n] = [e[2] for e in entries]
        return r

    def assign(self, start: int, end: int, row: int) -> None:
        if row >= 0 and end > start:
            self.token_row.np[start:end] = row
            self.num_active += end - start
            self._dirty = max(self._dirty, end)

    def commit(self, num_tokens: int) -> None:
        self.step[0] = self.num_active
        self.step[1] += 1
        self.token_row.upload(max(self._dirty, num_tokens))
        for buf in (self.row_slot, self.row_scale, self.row_op):
            buf.upload(self.num_rows)

    def reset(self) -> None:
        """Back to idle: every token untouched (what warm-up dummy runs see)."""
        if self._dirty:
            self.token_row.np[: self._dirty] = -1
            self.token_row.upload(self._dirty)
            self._dirty = 0
        self.step[0] = 0
        self.step[1] += 1
        self.num_active = 0
