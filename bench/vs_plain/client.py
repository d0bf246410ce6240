"""Driving one server: the control sanity check, and `vllm bench serve` runs, each in
its own process (the entry script re-run with CLIENT_FLAG, which lands in client_main,
where per-request controls are hooked into vLLM's dataset samples)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vs_plain.common import ENTRY, HERE, BenchError
from vs_plain.configs import Config, Shape
from vs_plain.servers import Server

CLIENT_FLAG = "--vllm-bench-client"
CLIENT_TIMEOUT_S = 900


@dataclass(frozen=True)
class RunResult:
    repeat: int  # -1: warm-up
    config: str
    seed: int
    output_tok_s: float
    failed: int
    wall_s: float


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


_TOK_S = re.compile(r"^Output token throughput \(tok/s\):\s+([0-9.]+)\s*$", re.M)
_FAILED = re.compile(r"^Failed requests:\s+(\d+)\s*$", re.M)


def parse_client_output(stdout: str) -> tuple[float, int]:
    tok_s, failed = _TOK_S.search(stdout), _FAILED.search(stdout)
    if tok_s is None or failed is None:
        raise BenchError("client output lacks the throughput / failed-requests lines")
    return float(tok_s.group(1)), int(failed.group(1))


def client_command(server: Server, model_dir: Path, shape: Shape, seed: int,
                   config: Config, per_request_file: Path | None) -> list[str]:
    cmd = [sys.executable, str(ENTRY), CLIENT_FLAG]
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
