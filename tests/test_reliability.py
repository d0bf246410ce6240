"""Reliability under load and faults, on the real server (loopback, bounded in time):
a reduced soak (bench/soak.py), clients that vanish mid-stream, and bad artifact files."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from chat_api import post
from conftest import ADMIN_KEY, API_KEY, EXIT, MODEL_NAME, PROBE, SERVER_SLOTS

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("soak", ROOT / "bench" / "soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)
QUIET = soak.QUIET_METRICS  # slot and queue gauges that must return to 0


def test_soak_reduced(server, refusal_artifacts, probe_artifacts, exit_artifacts, tmp_path):
    """16 streaming clients for 20 s over every kind of control: no errors, every control
    report complete, memory flat, slots and queues back to 0. The full size (64 clients,
    60 s) is `python bench/soak.py`."""
    extra = [{"refusal": {"mode": "guard", "direction": "refusal"}},
             {"hallucination": {"probe": PROBE, "per_token": True}},
             {"early_exit": {"mode": "observe", "predictor": EXIT, "threshold": 0.5}},
             {"steer": [{"vector": "joyful", "scale": 1.0}],
              "refusal": {"mode": "force", "direction": "refusal", "scale": 0.5}},
             {"projection_clamp": {"vector": "joyful", "hi": 0.0},
              "hallucination": {"probe": PROBE, "per_token": True},
              "early_exit": {"mode": "observe", "predictor": EXIT, "threshold": 0.5}}]
    controls = tmp_path / "controls.json"
    controls.write_text(json.dumps(extra))
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--url", server.base_url,
         "--pid", str(server.proc.pid), "--key", API_KEY, "--admin-key", ADMIN_KEY,
         "--clients", "16", "--duration", "20", "--warmup", "6", "--rss-bound-mb", "128",
         "--controls", str(controls), "--out", str(tmp_path / "soak")],
        capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "soak" / "report.json").read_text())
    assert report["errors"] == 0, report["error_examples"]
    assert report["incomplete_reports"] == 0  # every reply's report held all it asked for
    assert report["requests"] >= 16 and report["controls"] == 9 + len(extra)
    assert report["rss_mb"]["growth"] <= 128, report["rss_mb"]
    assert report["after"] == {m: 0.0 for m in QUIET}
    assert run.returncode == 0 and (tmp_path / "soak" / "rss.png").stat().st_size > 0


async def _vanish(base_url: str, i: int) -> str:
    """Start a long stream, then leave: after the first token, or (for requests that may
    wait for steering slots) before any byte arrives."""
    control = {"steer": [{"vector": f"rand{i % 12}", "scale": 0.2}]} if i % 2 else {}
    body = {"model": MODEL_NAME, "stream": True, "max_tokens": 400, "temperature": 0.8,
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "control": control}
    timeout = httpx.Timeout(300, read=2.0 if i % 4 == 1 else 300)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            async with client.stream("POST", base_url + "/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                async for line in r.aiter_lines():
                    if '"content"' in line:
                        return "left mid-stream"
                return "stream ended"
    except httpx.ReadTimeout:
        return "left while waiting"


def test_hundred_clients_leaving_mid_stream_free_everything(server, random_vectors):
    async def run():
        outcomes = await asyncio.gather(*(_vanish(server.base_url, i) for i in range(100)))
        # raises if the server stopped serving
        return outcomes, await soak.wait_quiet(server.base_url, API_KEY, MODEL_NAME, 90.0)

    finished_before = server.metric("vllm:request_success_total")
    outcomes, after = asyncio.run(run())
    assert outcomes.count("left mid-stream") >= 50, outcomes
    assert "stream ended" not in outcomes  # 400 tokens never finish before we leave
    assert after == {m: 0.0 for m in QUIET}
    # The abandoned requests were aborted, not run to their 400 tokens: only the probes
    # sent by wait_quiet finished since.
    finished = server.metric("vllm:request_success_total") - finished_before
    assert finished < 20, finished
    assert SERVER_SLOTS == server.metric("vsteer_steer_slots_total")


def _sha_listing(server) -> dict[str, str]:
    r = httpx.get(server.base_url + "/v1/control/vectors",
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    return {v["id"]: v["sha256"] for v in r.json()["data"]}


def _upload(server, name: str, data: bytes, overwrite: bool = True) -> httpx.Response:
    return httpx.post(server.base_url + f"/v1/control/vectors?name={name}"
                      f"&overwrite={str(overwrite).lower()}", content=data, timeout=120,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}",
                               "Content-Type": "application/octet-stream"})


def test_bad_artifact_files_are_rejected_and_change_nothing(server, fingerprint, artifacts):
    from vsteer.artifacts import ModelFingerprint, SteeringVector
    from vsteer.server.routes_vectors import MAX_UPLOAD_BYTES

    good = SteeringVector({5: np.full(576, 0.5, np.float32)}, fingerprint, method="file")
    assert _upload(server, "keeper", good.to_safetensors_bytes()).status_code == 201
    before = _sha_listing(server)
    other = ModelFingerprint("LlamaForCausalLM", 576, 32)  # another model's layer count
    data = good.to_safetensors_bytes()
    cases = {
        "corrupt": (b"\x07" * 64, 400, "safetensors"),
        "truncated": (data[: len(data) // 2], 400, ""),
        "wrong model": (SteeringVector({5: np.ones(576, np.float32)}, other)
                        .to_safetensors_bytes(), 400, "layers"),
        "oversized": (b"\x00" * (MAX_UPLOAD_BYTES + 1), 413, "larger than"),
    }
    for what, (payload, status, fragment) in cases.items():
        r = _upload(server, "keeper", payload)  # would overwrite "keeper" if accepted
        assert r.status_code == status, (what, r.text)
        err = r.json()["error"]
        assert fragment in err["message"] and err["type"] == "invalid_request_error", what
    assert _sha_listing(server) == before  # "keeper" and every other vector untouched
    assert not [p for p in (artifacts / "vector").iterdir() if p.name.endswith(".tmp")]


def test_a_corrupt_file_in_the_shared_store_is_refused_alone(server, artifacts):
    (artifacts / "vector" / "broken.safetensors").write_bytes(b"{not a safetensors file")
    try:
        r = post(server, {"max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}],
                          "control": {"steer": [{"vector": "broken", "scale": 1.0}]}})
        assert r.status_code == 400 and "broken" in r.json()["error"]["message"]
        assert "broken" not in _sha_listing(server)
        ok = post(server, {"max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}],
                           "control": {"steer": [{"vector": "joyful", "scale": 1.0}]}})
        assert ok.status_code == 200
    finally:
        (artifacts / "vector" / "broken.safetensors").unlink()


def test_no_pickle_anywhere():
    """Artifacts are safetensors/JSON only: no pickle, and no loader that unpickles."""
    sources = [p for d in ("vsteer", "server", "plugins", "kernels")
               for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 40
    banned = ("import pickle", "from pickle", "import cPickle", "import dill", "joblib",
              "torch.load(", "allow_pickle=True", "pd.read_pickle", "shelve")
    found = [(p.name, b) for p in sources for b in banned if b in p.read_text()]
    assert found == []
