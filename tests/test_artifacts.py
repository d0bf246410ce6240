"""Vector value type, the shared store (atomic, cross-process), GGUF round trip."""

import subprocess
import sys

import numpy as np
import pytest

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint, SteeringVector
from vsteer.artifacts.gguf_io import export_gguf, import_gguf

FP = ModelFingerprint("LlamaForCausalLM", 8, 4)


def vec(seed=0, layers=(1, 2)):
    rng = np.random.default_rng(seed)
    return SteeringVector({la: rng.standard_normal(8).astype(np.float32) for la in layers}, FP,
                          method="test", provenance={"seed": seed})


def test_arithmetic():
    a, b = vec(0), vec(1, layers=(2, 3))
    s = a + b
    assert s.layers == [1, 2, 3]
    np.testing.assert_allclose(s.directions[2], a.directions[2] + b.directions[2])
    np.testing.assert_allclose((a - a).directions[1], 0)
    np.testing.assert_allclose((2 * a).directions[1], 2 * a.directions[1])
    np.testing.assert_allclose((-a).directions[2], -a.directions[2])


def test_combining_vectors_of_different_models_fails():
    other = SteeringVector({1: np.ones(8, np.float32)}, ModelFingerprint("X", 8, 4))
    with pytest.raises(ArtifactError):
        vec() + other


@pytest.mark.parametrize("bad", [
    {9: np.ones(8, np.float32)},  # layer out of range
    {1: np.ones(7, np.float32)},  # wrong hidden size
    {1: np.array([np.nan] * 8, np.float32)},
    {},
])
def test_invalid_vectors_are_rejected(bad):
    with pytest.raises(ArtifactError):
        SteeringVector(bad, FP)


def test_safetensors_round_trip(tmp_path):
    store = ArtifactStore(tmp_path)
    v = vec()
    store.save_vector("v1", v)
    got = store.get_vector("v1")
    assert got.vector.fingerprint == FP and got.vector.method == "test"
    assert got.vector.provenance == {"seed": 0}
    for la in v.layers:
        np.testing.assert_array_equal(got.vector.directions[la], v.directions[la])


def test_no_silent_overwrite_and_no_temp_files_left(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save_vector("v", vec(0))
    with pytest.raises(FileExistsError):
        store.save_vector("v", vec(1))
    store.save_vector("v", vec(2), overwrite=True)
    np.testing.assert_array_equal(store.get_vector("v").vector.directions[1],
                                  vec(2).directions[1])
    assert [p.name for p in (tmp_path / "vector").iterdir()] == ["v.safetensors"]


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", ".hidden", "", "x" * 200, "a..b"])
def test_names_cannot_escape_the_store(tmp_path, name):
    with pytest.raises(ArtifactError):
        ArtifactStore(tmp_path).save_vector(name, vec())


@pytest.mark.parametrize("corrupt", [b"", b"\x00" * 4, b"\xff" * 64,
                                     (10**9).to_bytes(8, "little") + b"{}"])
def test_corrupt_files_are_rejected_clearly(tmp_path, corrupt):
    store = ArtifactStore(tmp_path)
    (tmp_path / "vector").mkdir()
    (tmp_path / "vector" / "bad.safetensors").write_bytes(corrupt)
    with pytest.raises(ArtifactError):
        store.get_vector("bad")


def test_truncated_file_is_rejected(tmp_path):
    store = ArtifactStore(tmp_path)
    data = vec().to_safetensors_bytes()
    (tmp_path / "vector").mkdir()
    (tmp_path / "vector" / "cut.safetensors").write_bytes(data[: len(data) - 10])
    with pytest.raises(ArtifactError):
        store.get_vector("cut")


def test_vector_written_by_another_process_is_seen(tmp_path):
    store = ArtifactStore(tmp_path)
    store.save_vector("shared", vec(0))
    assert store.get_vector("shared").vector.provenance == {"seed": 0}  # now cached
    code = (
        "import numpy as np, sys\n"
        "from vsteer.artifacts import *\n"
        "fp = ModelFingerprint('LlamaForCausalLM', 8, 4)\n"
        "v = SteeringVector({1: np.ones(8, np.float32)}, fp, provenance={'seed': 99})\n"
        "ArtifactStore(sys.argv[1]).save_vector('shared', v, overwrite=True)\n"
        "ArtifactStore(sys.argv[1]).save_vector('fresh', v)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert store.get_vector("shared").vector.provenance == {"seed": 99}
    assert "fresh" in store.names("vector")


def test_gguf_round_trip(tmp_path):
    v = vec(3, layers=(0, 2, 3))
    path = tmp_path / "cv.gguf"
    export_gguf(v, path)
    got = import_gguf(path, FP)
    assert got.layers == v.layers
    for la in v.layers:
        np.testing.assert_array_equal(got.directions[la], v.directions[la])


def test_gguf_tensor_names_follow_llama_cpp(tmp_path):
    import gguf

    path = tmp_path / "cv.gguf"
    export_gguf(vec(0, layers=(1, 3)), path)
    reader = gguf.GGUFReader(str(path))
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.3"]
    assert "controlvector.layer_count" in reader.fields


def test_gguf_for_another_hidden_size_is_rejected(tmp_path):
    path = tmp_path / "cv.gguf"
    export_gguf(vec(), path)
    with pytest.raises(ArtifactError):
        import_gguf(path, ModelFingerprint("LlamaForCausalLM", 16, 4))


def test_not_a_gguf_is_rejected(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope" * 10)
    with pytest.raises(ArtifactError):
        import_gguf(path, FP)
