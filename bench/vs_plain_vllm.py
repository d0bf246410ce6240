"""vsteer against plain vLLM, both measured by vLLM's own benchmark client (`vllm bench serve`).

One run on one machine: plain vLLM's OpenAI server and `vsteer serve` start one after
the other on 127.0.0.1 (vLLM's default compiled mode, same dtype, max-model-len and
max-num-seqs, `VLLM_CPU_KVCACHE_SPACE=1` each) and stay up together; the benchmark
client then drives one of them at a time. Configurations:

    plain      plain vLLM
    bare       vsteer, no control
    shared     vsteer, every request steered by one shared random vector on all layers
    distinct   vsteer, every request steered by its own random vector on all layers
    guarded    vsteer, refusal guard + per-token hallucination probe on every request

Every repeat runs each configuration once, in a shuffled order, with the same random
prompts (a new `--seed` per repeat, so no run reuses the prefix cache of an earlier
repeat; within a repeat the configurations never share cache blocks: plain vLLM is
another server and each vsteer control has its own cache salt). A configuration's
ratio is the median over repeats of its tok/s divided by plain vLLM's tok/s in the
same repeat; the IQR is that of the same paired ratios. One untimed round of every
configuration comes first (warm-up).

Every client run is `vllm.benchmarks.serve` (`vllm bench serve`: openai-chat backend,
`/v1/chat/completions`, random dataset, `--ignore-eos`) in its own process, controls in
`--extra-body '{"control": ...}'`; its stdout gives "Output token throughput (tok/s)"
and "Failed requests" (any failed request aborts the bench, printing the client's
output). `--extra-body` is one body for all requests, so for `distinct` the same client
runs with vLLM's dataset samples given per-request body overrides
(`SampleRequest.request_overrides`, which vLLM's client merges over `--extra-body`):
sample i carries vector i. Every configuration goes through that same entry point
(this file with `--vllm-bench-client`), so all pay the same client start-up.

Plain vLLM runs with vsteer's entry points hidden (a `sitecustomize` in a temporary
directory on its PYTHONPATH filters them out of `importlib.metadata.entry_points`), so
neither vsteer's general plugin nor its abstain logits processor is loaded into it: it
is vLLM as it is without vsteer installed.

Artifacts go to a temporary directory (or `--artifacts DIR`, where ones already there
are reused): random vectors through `bench/random_vectors.py` (vsteer.artifacts), the
refusal direction and the probe through vsteer's own CLI, made by the same functions as
the test suite's `refusal_artifacts` / `probe_artifacts` fixtures (tests/conftest.py).

    flock /tmp/vsteer-cpu.lock .venv/bin/python bench/vs_plain_vllm.py [--repeats 5] \\
        [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENT_FLAG = "--vllm-bench-client"
SHARED_VECTOR = "bench-shared"
DISTINCT_PREFIX = "bench-req"
TARGETS = {"bare": 0.99, "shared": 0.97, "distinct": 0.97}  # issue 15: ratio to plain vLLM
SERVER_START_TIMEOUT_S = 900
CLIENT_TIMEOUT_S = 900

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


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Shape:
    """What every client run sends, and the engine settings both servers share."""
    num_prompts: int
    input_len: int
    output_len: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    scale: float


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    server: str  # "plain" | "vsteer"
    control: dict[str, Any] | None = None  # one control object for every request
    per_request: list[dict[str, Any]] | None = None  # or one per request, in order


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model directory (default: vsteer's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--scale", type=float, default=0.5, help="steering scale")
    ap.add_argument("--seed", type=int, default=0, help="order shuffle and prompt seeds")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 repeat, 8 prompts, 16 input and 16 output tokens")
    ap.add_argument("--artifacts", type=Path, default=None,
                    help="artifact directory to use and keep (default: a temporary one)")
    ap.add_argument("--logs", type=Path, default=None,
                    help="directory for the server logs (default: a temporary one, kept "
                         "only when the bench fails)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.num_prompts, args.input_len, args.output_len = 1, 8, 16, 16
    return args


def shape_of(args: argparse.Namespace) -> Shape:
    return Shape(args.num_prompts, args.input_len, args.output_len, args.dtype,
                 args.max_model_len, args.max_num_seqs, args.scale)


# -------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifacts:
    root: Path
    shared: str
    distinct: list[str]
    direction: str
    probe: str


def make_artifacts(model_dir: Path, root: Path, count: int) -> Artifacts:
    """Random vectors (one shared, `count` distinct), a calibrated refusal direction and a
    hallucination probe with a per-token probe; ones already in `root` are kept."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "tests"))
    from random_vectors import save_random_vectors
    from transformers import AutoConfig

    from vsteer.artifacts import ArtifactStore, ModelFingerprint

    from conftest import PROBE, make_probe_artifacts, make_refusal_artifacts

    store = ArtifactStore(root)
    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(model_dir))
    distinct = [f"{DISTINCT_PREFIX}{i}" for i in range(count)]
    have = set(store.names("vector"))
    if not {SHARED_VECTOR, *distinct} <= have:
        save_random_vectors(store, fp, [SHARED_VECTOR, *distinct])
    work = Path(tempfile.mkdtemp(prefix="vs-plain-data-"))
    try:
        if "refusal" not in store.names("direction"):
            log(f"making refusal direction 'refusal' in {root} (vsteer refusal extract + "
                "calibrate)")
            make_refusal_artifacts(model_dir, root, work, controller=False)
        if PROBE not in store.names("probe"):
            log(f"making hallucination probe '{PROBE}' in {root} (vsteer probe dataset + "
                "train)")
            make_probe_artifacts(model_dir, root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Artifacts(root, SHARED_VECTOR, distinct, "refusal", PROBE)


def configurations(art: Artifacts, scale: float) -> list[Config]:
    def steer(name: str) -> dict[str, Any]:
        return {"steer": [{"vector": name, "scale": scale}]}

    return [
        Config("plain", "plain vLLM", "plain"),
        Config("bare", "vsteer, no control", "vsteer"),
        Config("shared", "vsteer, one shared vector, all layers", "vsteer",
               control=steer(art.shared)),
        Config("distinct", "vsteer, a distinct vector per request, all layers", "vsteer",
               per_request=[steer(n) for n in art.distinct]),
        Config("guarded", "vsteer, refusal guard + per-token hallucination probe", "vsteer",
               control={"refusal": {"mode": "guard", "direction": art.direction},
                        "hallucination": {"probe": art.probe, "per_token": True}}),
    ]


# ---------------------------------------------------------------------------- servers


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


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


# ------------------------------------------------------------------ control sanity check


def check_control(server: Server, model: str, config: Config) -> None:
    """One small non-streamed request with the configuration's (first) control: the
    response must report every control asked for, with no `control.errors`."""
    control = config.control or (config.per_request or [None])[0]
    if control is None:
        return
    tokens = 4
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": tokens, "temperature": 0.0, "control": control}
    req = urllib.request.Request(server.base_url + "/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            got = json.loads(r.read()).get("control") or {}
    except urllib.error.HTTPError as e:
        raise BenchError(f"{config.key}: control rejected ({e.code}): "
                         f"{e.read().decode(errors='replace')}") from None
    missing = [k for k in control if k not in got]
    problems = [f"not reported: {missing}"] if missing else []
    if got.get("errors"):
        problems.append(f"errors: {got['errors']}")
    scores = (got.get("hallucination") or {}).get("token_scores")
    if control.get("hallucination", {}).get("per_token") and len(scores or []) != tokens:
        problems.append(f"token_scores: {scores}")
    if problems:
        raise BenchError(f"{config.key}: {'; '.join(problems)}; response control: {got}")


# ----------------------------------------------------------------------------- client


@dataclass(frozen=True)
class RunResult:
    repeat: int  # -1: warm-up
    config: str
    seed: int
    output_tok_s: float
    failed: int
    wall_s: float


_TOK_S = re.compile(r"^Output token throughput \(tok/s\):\s+([0-9.]+)\s*$", re.M)
_FAILED = re.compile(r"^Failed requests:\s+(\d+)\s*$", re.M)


def parse_client_output(stdout: str) -> tuple[float, int]:
    tok_s, failed = _TOK_S.search(stdout), _FAILED.search(stdout)
    if tok_s is None or failed is None:
        raise BenchError("client output lacks the throughput / failed-requests lines")
    return float(tok_s.group(1)), int(failed.group(1))


def client_command(server: Server, model_dir: Path, shape: Shape, seed: int,
                   config: Config, per_request_file: Path | None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), CLIENT_FLAG]
    if per_request_file is not None:
        cmd += ["--per-request-controls", str(per_request_file)]
    cmd += ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
            "--base-url", server.base_url, "--model", model_dir.name,
            "--tokenizer", str(model_dir), "--dataset-name", "random",
            "--random-input-len", str(shape.input_len),
            "--random-output-len", str(shape.output_len),
            "--num-prompts", str(shape.num_prompts), "--ignore-eos",
            "--seed", str(seed), "--disable-tqdm"]
    if config.control is not None:
        cmd += ["--extra-body", json.dumps({"control": config.control})]
    return cmd


def run_client(server: Server, model_dir: Path, shape: Shape, config: Config, seed: int,
               repeat: int, work: Path) -> RunResult:
    server.check_alive()
    per_request_file = None
    if config.per_request is not None:
        per_request_file = work / f"{config.key}-controls.json"
        per_request_file.write_text(json.dumps(config.per_request))
    cmd = client_command(server, model_dir, shape, seed, config, per_request_file)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=HERE.parent)
    wall = time.monotonic() - t0
    output = f"{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    if proc.returncode != 0:
        raise BenchError(f"{config.key}: client exited {proc.returncode}:\n{output}")
    tok_s, failed = parse_client_output(proc.stdout)
    if failed:
        raise BenchError(f"{config.key}: {failed} failed request(s):\n{output}")
    return RunResult(repeat, config.key, seed, tok_s, failed, round(wall, 1))


def client_main(argv: list[str]) -> None:
    """`vllm bench serve` in this process; with --per-request-controls FILE (a JSON list),
    sample i of the dataset carries control i % len in its body."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--per-request-controls", type=Path, default=None)
    ours, rest = ap.parse_known_args(argv)
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if ours.per_request_controls is not None:
        controls = json.loads(ours.per_request_controls.read_text())
        original = serve.get_samples

        def get_samples(args: argparse.Namespace, tokenizer: Any) -> list[Any]:
            samples = original(args, tokenizer)
            for i, sample in enumerate(samples):
                sample.request_overrides = {**(sample.request_overrides or {}),
                                            "control": controls[i % len(controls)]}
            return samples

        serve.get_samples = get_samples  # main_async looks it up in the module
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    serve.main(parser.parse_args(rest))


# ---------------------------------------------------------------------------- schedule


def schedule(configs: list[Config], repeats: int, seed: int) -> list[list[Config]]:
    """Each repeat: every configuration once, in its own shuffled order."""
    rng = random.Random(seed)
    return [rng.sample(configs, len(configs)) for _ in range(repeats)]


def run_all(servers: dict[str, Server], model_dir: Path, shape: Shape,
            configs: list[Config], repeats: int, seed: int, work: Path) -> list[RunResult]:
    for config in configs:
        check_control(servers[config.server], model_dir.name, config)
    results = []
    warmup_seed = seed + 10_000
    for config in configs:
        r = run_client(servers[config.server], model_dir, shape, config, warmup_seed, -1, work)
        log(f"warm-up {config.key}: {r.output_tok_s:.1f} tok/s")
        results.append(r)
    for i, order in enumerate(schedule(configs, repeats, seed)):
        for config in order:
            r = run_client(servers[config.server], model_dir, shape, config, seed + i, i, work)
            log(f"repeat {i + 1}/{repeats} {config.key}: {r.output_tok_s:.1f} tok/s")
            results.append(r)
    return results


# ----------------------------------------------------------------------------- summary


@dataclass
class Row:
    key: str
    label: str
    tok_s_median: float
    ratio_median: float
    ratio_q1: float
    ratio_q3: float
    failed: int
    target: float | None
    met: bool | None
    tok_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarize(configs: list[Config], results: list[RunResult]) -> list[Row]:
    timed = [r for r in results if r.repeat >= 0]
    by = {(r.config, r.repeat): r for r in timed}
    repeats = sorted({r.repeat for r in timed})
    rows = []
    for c in configs:
        tok_s = [by[c.key, i].output_tok_s for i in repeats]
        ratios = [by[c.key, i].output_tok_s / by["plain", i].output_tok_s for i in repeats]
        q1, q3 = quartiles(ratios)
        med = statistics.median(ratios)
        target = TARGETS.get(c.key)
        rows.append(Row(c.key, c.label, statistics.median(tok_s), med, q1, q3,
                        sum(by[c.key, i].failed for i in repeats), target,
                        None if target is None else med >= target, tok_s, ratios))
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = ["| configuration | output tok/s (median) | ratio to plain vLLM (median of "
             "paired) | IQR of paired ratios | target | met | failed requests |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "" if r.target is None else f"≥ {r.target:.2f}×"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.label} | {r.tok_s_median:.1f} | {r.ratio_median:.3f} | "
                     f"{r.ratio_q1:.3f}–{r.ratio_q3:.3f} | {target} | {met} | {r.failed} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import torch
    import vllm
    from timing import device_name

    return {"cpu": device_name(torch.device("cpu")), "torch": torch.__version__,
            "vllm": vllm.__version__, "python": sys.version.split()[0]}


def write_json(path: Path, args: argparse.Namespace, shape: Shape, rows: list[Row],
               results: list[RunResult], startup: dict[str, Any]) -> None:
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "shape": asdict(shape), "repeats": args.repeats,
        "seed": args.seed, "targets": TARGETS, **startup,
        "rows": [asdict(r) for r in rows], "runs": [asdict(r) for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# -------------------------------------------------------------------------------- main


def bench(args: argparse.Namespace, work: Path) -> None:
    from vsteer.model import resolve_model

    model_dir = Path(resolve_model(args.model))
    shape = shape_of(args)
    art_root = args.artifacts or work / "artifacts"
    art_root.mkdir(parents=True, exist_ok=True)
    art = make_artifacts(model_dir, art_root, shape.num_prompts)
    configs = configurations(art, shape.scale)
    t0 = time.monotonic()
    with running_servers(model_dir, shape, art, args.logs or work) as servers:
        started = round(time.monotonic() - t0, 1)
        results = run_all(servers, model_dir, shape, configs, args.repeats, args.seed, work)
    rows = summarize(configs, results)
    print(f"\n{args.repeats} repeat(s); {shape.num_prompts} prompts x {shape.input_len} in / "
          f"{shape.output_len} out tokens, {shape.dtype}, max-num-seqs {shape.max_num_seqs}, "
          f"steering scale {shape.scale}\n")
    print(markdown_table(rows))
    if args.json:
        write_json(args.json, args, shape, rows, results, {"servers_started_s": started})
        print(f"\nwrote {args.json}")


def main() -> None:
    if sys.argv[1:2] == [CLIENT_FLAG]:
        client_main(sys.argv[2:])
        return
    args = parse_args(sys.argv[1:])
    raise_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="vs-plain-vllm-"))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        bench(args, work)
        ok = True
    except BenchError as e:
        print(f"vs_plain_vllm: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"vs_plain_vllm: interrupted ({e or 'Ctrl-C'}); servers stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        if ok or args.logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work} (server logs, artifacts) for inspection")


if __name__ == "__main__":
    main()
