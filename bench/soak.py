"""Soak: many concurrent streaming clients with mixed controls, for a fixed time.

Each client loops until the time is up: one streamed chat completion at a time, its
control cycling through the mix (plain, steering ops and positions, several vectors,
and whatever else `--controls` adds). A request counts as an error unless it returns
200, streams tokens, ends with `data: [DONE]` and carries a complete `control` report
(every score, per-token record and exit record its control asked for, and no entry in
`control.errors`); `incomplete_reports` counts those that lacked something.
Resident memory of the server and its engine processes is sampled every second; the
growth from the end of the warm-up to the end must stay within `--rss-bound-mb`.
Afterwards the steering slots (worker and server side) and vLLM's running / waiting
requests must return to 0.

    python bench/soak.py                         # its own server: 64 clients, 60 s
    python bench/soak.py --url URL --pid PID --key K --admin-key A --clients 16 --duration 15

Prints one JSON report (and writes report.json + rss.png under --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

VECTORS = 6
QUIET_METRICS = ("vsteer_steer_slots_in_use", "vsteer_admitted_slot_keys",
                 "vsteer_requests_waiting_for_slots", "vllm:num_requests_running",
                 "vllm:num_requests_waiting")


def steering_mix(names: list[str]) -> list[dict[str, Any]]:
    """Plain, each steering op, a generated-only position, and three vectors at once."""
    mix: list[dict[str, Any]] = [{}]
    for i, name in enumerate(names):
        op = ("add", "ablate", "add_normalized")[i % 3]
        mix.append({"steer": [{"vector": name, "scale": 0.5 if op == "add" else 1.0,
                               "op": op}]})
    mix.append({"steer": [{"vector": names[0], "scale": 0.5, "positions": "generated"}]})
    mix.append({"steer": [{"vector": n, "scale": 0.3} for n in names[:3]]})
    return mix


async def one_request(client: httpx.AsyncClient, url: str, key: str, model: str,
                      control: dict[str, Any], max_tokens: int) -> tuple[bool, str, int]:
    """(ok, why-not, content chunks) for one streamed chat completion."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "control": control, "stream_options": {"include_usage": True}}
    chunks = 0
    done = False
    report: dict[str, Any] | None = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {(await r.aread())[:200]!r}", 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            if payload == "[DONE]":
                done = True
                break
            data = json.loads(payload)
            if "control" in data and not data["choices"]:
                report = data["control"]  # the final chunk's report
                tokens = (data.get("usage") or {}).get("completion_tokens") or 0
            chunks += any((c.get("delta") or {}).get("content") for c in data["choices"])
    if not (done and report is not None and chunks):
        return False, (f"stream incomplete: done={done} control={report is not None} "
                       f"chunks={chunks}"), 0
    missing = incomplete(control, report, tokens)
    if missing:
        return False, f"incomplete control report: {missing}", chunks
    return True, "", chunks


def incomplete(asked: dict[str, Any], report: dict[str, Any], tokens: int) -> list[str]:
    """What a reply's `control` report lacks of what its request asked for."""
    out = [f"error {e.get('code')}: {e.get('message')}" for e in report.get("errors", [])]
    ref = asked.get("refusal")
    if ref and ref.get("mode", "guard") in ("guard", "controller") \
            and (report.get("refusal") or {}).get("score") is None:
        out.append("refusal score")
    hal = asked.get("hallucination")
    if hal:
        rep = report.get("hallucination") or {}
        if rep.get("score") is None:
            out.append("hallucination score")
        if hal.get("per_token") and len(rep.get("token_scores") or []) != tokens:
            out.append(f"{len(rep.get('token_scores') or [])} of {tokens} token scores")
    if asked.get("early_exit") and (report.get("early_exit") or {}).get("tokens") != tokens:
        out.append("early-exit records")
    return out


async def client_loop(i: int, deadline: float, args, mix: list[dict], stats: dict) -> None:
    rng = random.Random(i)
    n = i
    async with httpx.AsyncClient(timeout=300) as client:
        while time.monotonic() < deadline:
            control = mix[n % len(mix)]
            n += 1
            try:
                ok, why, chunks = await one_request(client, args.url, args.key, args.model,
                                                    control, rng.randint(8, 32))
            except (httpx.HTTPError, json.JSONDecodeError) as e:
                ok, why, chunks = False, f"{type(e).__name__}: {e}", 0
            stats["requests"] += 1
            stats["chunks"] += chunks
            if not ok:
                stats["errors"] += 1
                stats["incomplete_reports"] += why.startswith("incomplete control report")
                if len(stats["error_examples"]) < 5:
                    stats["error_examples"].append({"control": control, "why": why})


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


async def sample_rss(pid: int, deadline: float, samples: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - t0, rss_mb(pid)))
        await asyncio.sleep(1.0)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


async def wait_quiet(url: str, key: str, model: str, timeout: float = 60.0
                     ) -> dict[str, float]:
    """Poll until every slot / queue gauge reads 0 (a plain request refreshes the worker's
    stats, which it sends only while it steps); returns the last readings. Raises if
    that plain request fails: the server stopped serving."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=120) as client:
        while True:
            ok, why, _ = await one_request(client, url, key, model, {}, 4)
            if not ok:
                raise RuntimeError(f"the server stopped serving: {why}")
            await asyncio.sleep(1.0)
            text = (await client.get(url + "/metrics")).text
            values = {m: metric(text, m) for m in QUIET_METRICS}
            if not any(values.values()) or time.monotonic() > deadline:
                return values


async def soak(args, mix: list[dict]) -> dict[str, Any]:
    stats: dict[str, Any] = {"requests": 0, "chunks": 0, "errors": 0, "incomplete_reports": 0,
                             "error_examples": []}
    start = time.monotonic()
    deadline = start + args.duration
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_rss(args.pid, deadline, samples))
    await asyncio.gather(*(client_loop(i, deadline, args, mix, stats)
                           for i in range(args.clients)))
    elapsed = time.monotonic() - start
    await sampler
    after = await wait_quiet(args.url, args.key, args.model)
    warm = [mb for t, mb in samples if t >= args.warmup] or [samples[-1][1]]
    growth = warm[-1] - warm[0]
    return {
        "clients": args.clients, "duration_s": round(elapsed, 1), "controls": len(mix),
        **stats, "tokens_per_s": round(stats["chunks"] / elapsed, 1),
        "rss_mb": {"after_warmup": round(warm[0], 1), "end": round(warm[-1], 1),
                   "max": round(max(mb for _, mb in samples), 1),
                   "growth": round(growth, 1), "bound": args.rss_bound_mb},
        "after": after, "rss_samples": [[round(t, 1), round(mb, 1)] for t, mb in samples],
        "ok": stats["errors"] == 0 and growth <= args.rss_bound_mb and not any(after.values()),
    }


def plot(report: dict, warmup: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, mb = np.array(report["rss_samples"]).T
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(t, mb, marker=".")
    ax.axvline(warmup, color="grey", ls="--", label="end of warm-up")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS, server + engine (MiB)")
    ax.set_title(f"soak: {report['clients']} streaming clients, {report['requests']} requests, "
                 f"{report['errors']} errors")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register_vectors(args) -> list[str]:
    """Random vectors on every layer, uploaded through the admin API."""
    rng = np.random.default_rng(0)
    hidden, layers = args.hidden, args.layers
    names = []
    for i in range(VECTORS):
        name = f"soak{i}"
        dirs = {str(la): (rng.standard_normal(hidden) * 0.1).tolist() for la in range(layers)}
        up = httpx.post(args.url + "/v1/control/vectors?overwrite=true", timeout=60,
                        headers={"Authorization": f"Bearer {args.admin_key}"},
                        json={"name": name, "directions": dirs})
        if up.status_code != 201:
            raise SystemExit(f"vector upload failed: {up.status_code} {up.text}")
        names.append(name)
    return names


def start_own_server(args, tmp: Path) -> subprocess.Popen:
    """`vsteer serve` on the default model (eager); sets args.url / key / admin_key / pid."""
    args.key, args.admin_key = "soak-key", "soak-admin-key"
    port = 8700 + os.getpid() % 200
    args.url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vsteer.cli", "serve", "--model", "default", "--port",
           str(port), "--artifacts", str(tmp), "--api-key", args.key, "--admin-key",
           args.admin_key, "--enforce-eager", "--max-model-len", "1024"]
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((tmp / "server.log").read_text()[-3000:])
        try:
            if httpx.get(args.url + "/health", timeout=2).status_code == 200:
                args.pid = proc.pid
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server (default: start one on the default model)")
    ap.add_argument("--pid", type=int, help="the running server's pid (for RSS)")
    ap.add_argument("--key", default=None)
    ap.add_argument("--admin-key", default=None)
    ap.add_argument("--model", default="SmolLM2-135M-Instruct", help="served model name")
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS counts")
    ap.add_argument("--rss-bound-mb", type=float, default=128.0)
    ap.add_argument("--controls", type=Path, help="JSON list of extra control objects")
    ap.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    args = ap.parse_args()
    own = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url is None:
            own = start_own_server(args, Path(tmp))
        try:
            mix = steering_mix(register_vectors(args))
            if args.controls:
                mix += json.loads(args.controls.read_text())
            report = asyncio.run(soak(args, mix))
        finally:
            if own is not None:
                own.terminate()
                own.wait(90)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    plot(report, args.warmup, args.out / "rss.png")
    print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
