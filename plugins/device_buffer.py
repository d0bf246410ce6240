"""A preallocated host tensor with a device twin (the same tensor on CPU)."""

from __future__ import annotations

import torch


class HostDeviceBuffer:
    def __init__(self, host: torch.Tensor, device: torch.device) -> None:
        self.host = host.pin_memory() if device.type == "cuda" else host
        self.np = self.host.numpy()
        self.device = self.host if device.type == "cpu" else self.host.to(device)

    def upload(self, n: int) -> None:
        """Copy the first `n` rows host → device (no-op on CPU: they share memory)."""
        if self.device is not self.host and n > 0:
            self.device[:n].copy_(self.host[:n], non_blocking=True)

    def upload_row(self, i: int) -> None:
        """Copy row `i` host → device (no-op on CPU)."""
        if self.device is not self.host:
            self.device[i].copy_(self.host[i], non_blocking=True)
