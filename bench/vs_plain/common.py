"""What every part of the vs-plain-vLLM bench shares: where bench/ is, its error, its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # bench/
ENTRY = HERE / "vs_plain_vllm.py"  # the script, also re-run as the benchmark client


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
