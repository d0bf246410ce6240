"""llama.cpp / repeng control vectors (GGUF, tensors `direction.<layer>`).

The GGUF carries no hidden size or layer count we can trust, so import stamps the
fingerprint of the model the caller names and checks the shapes against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vsteer.artifacts.fingerprint import ModelFingerprint
from vsteer.artifacts.tensors_file import ArtifactError
from vsteer.artifacts.vector import SteeringVector

_ARCH = "controlvector"


def export_gguf(vector: SteeringVector, path: str | Path, model_hint: str = "llama") -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), _ARCH)
    writer.add_string(f"{_ARCH}.model_hint", model_hint)
    writer.add_uint32(f"{_ARCH}.layer_count", len(vector.directions))
    for layer in vector.layers:
        writer.add_tensor(f"direction.{layer}", vector.directions[layer].astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def import_gguf(path: str | Path, fingerprint: ModelFingerprint) -> SteeringVector:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct.error/... on bad files
        raise ArtifactError(f"not a readable GGUF file: {e}") from e
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        try:
            layer = int(t.name.split(".", 1)[1])
        except ValueError:
            raise ArtifactError(f"bad tensor name {t.name!r}") from None
        directions[layer] = np.array(t.data, dtype=np.float32).reshape(-1)
    if not directions:
        raise ArtifactError("GGUF holds no direction.<layer> tensors")
    return SteeringVector(directions, fingerprint, method="gguf-import",
                          provenance={"source": Path(path).name})
