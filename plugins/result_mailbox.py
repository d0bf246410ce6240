"""How the job table's scores leave the device without a read inside the forward pass.

After the forward the runtime `post`s the step's result rows: a non-blocking copy of
`out[:n]` into one of two pinned host buffers, and an event recorded after it. A reader
thread waits for that event (off the step's critical path: the engine's own thread goes
on scheduling the next step), reads the host rows and runs each job's callback under
the runtime's lock, then the step's `then` (which sends the step's report). Steps
without table jobs pass through the same queue, so reports leave in step order. Two buffers:
while the reader still reads step N's rows, step N+1 copies into the other; a third
post waits until the reader has released the buffer it wants. On CPU the "copy" is a
memcpy of host memory and there is no event, but the same reader thread runs it.

What must not wait for the reader, `abstain`, decides on the device: the logits
processor masks a row by the probe's `fired` flag read from `out` on the device, before
this step's sampling (plugins/abstain.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import torch

OnResult = Callable[[float, bool], None]
log = logging.getLogger("vsteer.runtime")


class ResultMailbox:
    def __init__(self, capacity: int, device: torch.device, lock: threading.RLock) -> None:
        pin = device.type == "cuda"
        self._host = [torch.zeros(capacity, 2, dtype=torch.float32, pin_memory=pin)
                      for _ in range(2)]  # [J, 2] (score, fired) x 2
        self._free = [threading.Event(), threading.Event()]
        for f in self._free:
            f.set()
        self._next = 0
        self._cuda = device.type == "cuda"
        self._lock = lock
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="vsteer-job-results",
                                        daemon=True)
        self._thread.start()

    def post(self, out: torch.Tensor, callbacks: Sequence[OnResult | None],
             then: Callable[[], None] | None = None) -> None:
        """Queue this step's results (`out` [J, 2] on the device; callbacks by row);
        `then` runs after the callbacks."""
        n = len(callbacks)
        if not any(cb is not None for cb in callbacks):
            if then is not None:
                self._queue.put((-1, 0, [], None, then))
            return
        k = self._next
        self._next ^= 1
        self._free[k].wait()  # the reader released this buffer (two posts ago)
        self._free[k].clear()
        self._host[k][:n].copy_(out[:n], non_blocking=self._cuda)
        event = None
        if self._cuda:
            event = torch.cuda.Event()
            event.record()
        self._queue.put((k, n, list(callbacks), event, then))

    def drain(self, timeout: float = 10.0) -> None:
        """Block until every posted step has been read (shutdown, tests)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            k, n, callbacks, event, then = item
            rows = []
            if k >= 0:
                if event is not None:
                    event.synchronize()  # releases the GIL while the device finishes
                rows = self._host[k][:n].tolist()
                self._free[k].set()
            with self._lock:
                try:
                    for cb, (score, fired) in zip(callbacks, rows, strict=True):
                        if cb is not None:
                            cb(score, fired > 0)
                    if then is not None:
                        then()
                except Exception:  # a bad report must not stop every later one
                    log.exception("vsteer: reporting a step's job results failed")
