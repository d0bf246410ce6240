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

This file is the entry point (options, the interleaved repeat loop, the table); the
parts live in bench/vs_plain/ (configs, servers, client, summary).

    flock /tmp/vsteer-cpu.lock .venv/bin/python bench/vs_plain_vllm.py [--repeats 5] \\
        [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_plain.client import (  # noqa: E402
    CLIENT_FLAG,
    RunResult,
    check_control,
    client_main,
    run_client,
)
from vs_plain.common import BenchError, log  # noqa: E402
from vs_plain.configs import (  # noqa: E402
    NEEDS_GUARD_ARTIFACTS,
    Config,
    Shape,
    configurations,
    make_artifacts,
)
from vs_plain.servers import Server, raise_on_sigterm, running_servers  # noqa: E402
from vs_plain.summary import markdown_table, summarize, write_json  # noqa: E402


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
    ap.add_argument("--only", default=None,
                    help="comma-separated configuration keys to run (plain is always run: "
                         "the ratios are to it), e.g. bare,distinct")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.num_prompts, args.input_len, args.output_len = 1, 8, 16, 16
    return args


def shape_of(args: argparse.Namespace) -> Shape:
    return Shape(args.num_prompts, args.input_len, args.output_len, args.dtype,
                 args.max_model_len, args.max_num_seqs, args.scale)


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


def bench(args: argparse.Namespace, work: Path) -> None:
    from vsteer.model import resolve_model

    model_dir = Path(resolve_model(args.model))
    shape = shape_of(args)
    art_root = args.artifacts or work / "artifacts"
    art_root.mkdir(parents=True, exist_ok=True)
    only = None if args.only is None else {"plain", *args.only.split(",")}
    art = make_artifacts(model_dir, art_root, shape.num_prompts,
                         guard=only is None or bool(NEEDS_GUARD_ARTIFACTS & only))
    configs = [c for c in configurations(art, shape.scale) if only is None or c.key in only]
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
