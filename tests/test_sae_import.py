"""`vsteer sae import`: SAELens's layout read and checked against the model
(vsteer/sae/saelens_import.py), stored as an artifact that round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from vsteer.artifacts import ArtifactError, ArtifactStore, ModelFingerprint
from vsteer.artifacts.sae import SparseAutoencoder
from vsteer.sae.saelens_import import hook_layer, read_saelens

from sae_files import random_sae, write_saelens

FP = ModelFingerprint("LlamaForCausalLM", 32, 4)


@pytest.mark.parametrize(("hook", "layer"), [
    ("blocks.2.hook_resid_post", 2), ("blocks.2.hook_resid_pre", 1),
    ("model.layers.3", 3)])
def test_hook_names_map_to_the_stream_after_a_layer(hook, layer):
    assert hook_layer(hook) == layer


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out",
                                  "blocks.2.attn.hook_z"])
def test_hooks_off_the_residual_stream_are_refused(hook):
    with pytest.raises(ArtifactError):
        hook_layer(hook)


def test_import_round_trips_and_encodes_like_saelens(tmp_path):
    t = random_sae(32, 16, jumprelu=True)
    d = write_saelens(tmp_path / "sae", t, "blocks.2.hook_resid_post", "jumprelu",
                      metadata={"hook_name": "ignored-when-top-level-exists"})
    sae = read_saelens(d, FP)
    assert (sae.layer, sae.architecture, sae.num_features) == (2, "jumprelu", 16)
    store = ArtifactStore(tmp_path / "artifacts")
    store.save("sae", "s", sae)
    back = store.get("sae", "s").value
    assert isinstance(back, SparseAutoencoder) and np.array_equal(back.W_dec, t["W_dec"])
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]  # SAELens's JumpReLU encode
    want = pre * (pre > t["threshold"])
    assert np.allclose(back.encode(x), want, atol=1e-6)


def test_saelens_6_keeps_the_hook_under_metadata(tmp_path):
    d = write_saelens(tmp_path / "sae", random_sae(32, 8), hook_name=None,
                      metadata={"hook_name": "blocks.1.hook_resid_post"})
    assert read_saelens(d, FP).layer == 1


@pytest.mark.parametrize(("change", "message"), [
    ({"d_in": 64}, "hidden size"),
    ({"hook_name": "blocks.9.hook_resid_post"}, "has 4 layers"),
    ({"architecture": "topk"}, "architecture"),
    ({"normalize_activations": "expected_average_only_in"}, "normalize_activations"),
])
def test_an_sae_for_another_model_or_kind_is_refused(tmp_path, change, message):
    d = write_saelens(tmp_path / "sae", random_sae(32, 8),
                      change.pop("hook_name", "blocks.1.hook_resid_post"), **change)
    with pytest.raises(ArtifactError, match=message):
        read_saelens(d, FP)


def test_jumprelu_without_a_threshold_is_refused(tmp_path):
    d = write_saelens(tmp_path / "sae", random_sae(32, 8), "blocks.1.hook_resid_post",
                      "jumprelu")
    with pytest.raises(ArtifactError, match="threshold"):
        read_saelens(d, FP)
