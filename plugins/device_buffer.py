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


class UploadFence:
    """Orders host writes into pinned staging after the device has read the previous
    step's upload out of it (vLLM fences its own input buffers the same way): `record()`
    after a step's non-blocking uploads, `wait()` before the next step writes the host
    rows. The wait is almost always free: the copy was queued ahead of the previous
    forward. No-op on CPU, where host and device rows are one tensor."""

    def __init__(self, device: torch.device, event_factory=None) -> None:
        self._new_event = event_factory or (torch.cuda.Event if device.type == "cuda" else None)
        self._event = None

    def record(self) -> None:
        if self._new_event is not None:
            self._event = self._new_event()
            self._event.record()

    def wait(self) -> None:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
