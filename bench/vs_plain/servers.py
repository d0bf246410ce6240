"""Plain vLLM and `vsteer serve` side by side: commands, environments, start, health
wait, stop. Plain vLLM runs with vsteer's entry points hidden (see HIDE_VSTEER)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vs_plain.common import HERE, BenchError, log
from vs_plain.configs import Artifacts, Shape

SERVER_START_TIMEOUT_S = 900

HIDE_VSTEER = '''"""Written by bench/vs_plain_vllm.py: hide vsteer's entry points (plain vLLM)."""
import importlib.metadata as _md

_entry_points = _md.entry_points


def _without_vsteer(**params):
    eps = _entry_points(**params)
    if not params:
        return eps
    return _md.EntryPoints(e for e in eps if not e.value.startswith("vsteer."))


_md.entry_points = _without_vsteer
'''


@dataclass
class Server:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} server exited ({self.proc.returncode}); log tail:\n"
                             f"{self.log_tail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: its own session (Ctrl-C is ours to forward), and SIGTERM
    when this process dies, however it dies (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def engine_options(shape: Shape, port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--dtype", shape.dtype,
            "--max-model-len", str(shape.max_model_len),
            "--max-num-seqs", str(shape.max_num_seqs)]


def plain_command(model_dir: Path, shape: Shape, port: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
            str(model_dir), "--served-model-name", model_dir.name,
            *engine_options(shape, port)]


def vsteer_command(model_dir: Path, shape: Shape, port: int, art: Artifacts) -> list[str]:
    from vsteer.engine_config import DEFAULT_STEER_SLOTS

    slots = max(DEFAULT_STEER_SLOTS, len(art.distinct))  # `distinct` never waits for slots
    return [sys.executable, "-m", "vsteer.cli", "serve", "--model", str(model_dir),
            "--artifacts", str(art.root), "--max-steer-slots", str(slots),
            *engine_options(shape, port)]


def server_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", **extra}


def plain_env(work: Path) -> dict[str, str]:
    hide = work / "plain-vllm-site"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(HIDE_VSTEER)
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH", "")) if p)
    return server_env({"PYTHONPATH": path})


def launch(name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> Server:
    path = log_dir / f"{name}.log"
    log(f"starting {name}: {' '.join(cmd)} (log: {path})")
    with open(path, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=HERE.parent, preexec_fn=_die_with_parent)
    return Server(name, int(cmd[cmd.index("--port") + 1]), path, proc)


def wait_ready(server: Server, timeout_s: float = SERVER_START_TIMEOUT_S) -> float:
    """Seconds until GET /v1/models answers 200."""
    t0 = time.monotonic()
    while True:
        server.check_alive()
        try:
            with urllib.request.urlopen(server.base_url + "/v1/models", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise BenchError(f"{server.name} not ready after {timeout_s:.0f} s; log tail:\n"
                             f"{server.log_tail()}")
        time.sleep(2)


def stop(server: Server) -> None:
    """SIGTERM to the server's process group (API server, engine core, worker), then
    SIGKILL to whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(10)


@contextlib.contextmanager
def running_servers(model_dir: Path, shape: Shape, art: Artifacts,
                    work: Path) -> Iterator[dict[str, Server]]:
    """Plain vLLM, then vsteer, each started once the previous one answers; both
    stopped on the way out, whatever the way out is."""
    servers: dict[str, Server] = {}
    try:
        port = free_port()
        servers["plain"] = launch("plain", plain_command(model_dir, shape, port),
                                  plain_env(work), work)
        log(f"plain vLLM ready after {wait_ready(servers['plain']):.0f} s")
        port = free_port()
        servers["vsteer"] = launch("vsteer", vsteer_command(model_dir, shape, port, art),
                                   server_env({}), work)
        log(f"vsteer ready after {wait_ready(servers['vsteer']):.0f} s")
        yield servers
    finally:
        for server in reversed(list(servers.values())):
            log(f"stopping {server.name}")
            stop(server)


def raise_on_sigterm() -> None:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so the servers are stopped."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
