"""What a request's stream should be, and what the server says it was: transformers in
fp32 fed the same token ids with edits after chosen layers, against `control.capture`
(all positions) of a request to the real server."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import numpy as np

from conftest import API_KEY, MODEL_NAME

Edit = Callable[[np.ndarray], np.ndarray]  # the stream after a layer, [n, H] -> [n, H]


def complete(server, prompt: str, control: dict, max_tokens: int = 6, **kw) -> dict:
    """A greedy /v1/completions reply with its token ids."""
    r = httpx.post(server.base_url + "/v1/completions", timeout=300, headers={
        "Authorization": f"Bearer {API_KEY}"}, json={
        "model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "return_token_ids": True, "control": control, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def fed_ids(data: dict) -> list[int]:
    """Every token the model read: the prompt and all generated tokens but the last."""
    c = data["choices"][0]
    return c["prompt_token_ids"] + c["token_ids"][:-1]


def decode_capture(rep: dict) -> np.ndarray:
    """control.capture -> [n_layers, n_tokens, hidden] float32."""
    assert rep["dtype"] == "float32"
    return np.frombuffer(base64.b64decode(rep["data"]), "<f4").reshape(rep["shape"])


def add_at(delta: np.ndarray, where) -> Edit:
    """An edit adding `delta` [H] at the positions `where`."""
    def edit(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[list(where)] += delta
        return y
    return edit


def edited_states(hf_model, ids: list[int], edits: dict[int, Edit], layers: list[int]
                  ) -> list[np.ndarray]:
    """transformers' hidden_states[l + 1] for l in `layers`, with edits[l] applied to the
    stream after layer l (each [n, H])."""
    import torch

    handles = []
    for la, edit in edits.items():
        def hook(_m, _a, out, edit=edit):
            x = out[0] if isinstance(out, tuple) else out
            y = torch.from_numpy(np.ascontiguousarray(edit(x[0].numpy()), np.float32))[None]
            return (y, *out[1:]) if isinstance(out, tuple) else y

        # prepend: transformers records hidden_states through forward hooks of its own,
        # which must see the edited stream
        handles.append(hf_model.model.layers[la].register_forward_hook(hook, prepend=True))
    try:
        with torch.no_grad():
            hs = hf_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    return [hs[la + 1][0].numpy().copy() for la in layers]


def serve_with_random_vector(model_dir, tmp, layer: int, seed: int, *extra: str):
    """`vsteer serve` on `model_dir` (plus `extra` server options) with a random unit
    steering vector "rand" at `layer` in its artifact store, and transformers' fp32 copy
    of the model: (server, transformers model, the vector [H]). The caller stops the
    server."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from vsteer.artifacts import ArtifactStore, ModelFingerprint, SteeringVector

    from conftest import start_server

    fp = ModelFingerprint.from_hf_config(AutoConfig.from_pretrained(model_dir))
    v = np.random.default_rng(seed).standard_normal(fp.hidden_size).astype(np.float32)
    v /= np.linalg.norm(v)
    ArtifactStore(tmp / "artifacts").save_vector(
        "rand", SteeringVector({layer: v}, fp, method="random"))
    srv = start_server(model_dir, tmp / "artifacts", tmp, "--served-model-name", MODEL_NAME,
                       *extra)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return srv, hf, v


def assert_close(got: np.ndarray, ref: list[np.ndarray], layers: list[int],
                 tol: float = 2e-3) -> None:
    """Per layer and position, relative to the reference's norm (fp32 against fp32,
    other kernels)."""
    for j, r in enumerate(ref):
        rel = np.linalg.norm(got[j] - r, axis=1) / np.linalg.norm(r, axis=1)
        assert rel.max() < tol, (layers[j], rel.round(4).tolist())
