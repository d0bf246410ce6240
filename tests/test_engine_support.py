"""Engine configurations the runtime would serve wrongly are refused before any engine
starts (`vsteer serve` exits 2 naming each), and by the worker when an engine reaches it
some other way."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vllm.config import ParallelConfig

from vsteer.plugins.engine_support import EngineFeatures, UnsupportedEngine, check, refusals
from vsteer.server.main import build_config, main

REFUSED = {
    "pipeline": (["--pipeline-parallel-size", "2"], "pipeline parallelism"),
    "data": (["--data-parallel-size", "2"], "data parallelism"),
    "dbo": (["--enable-dbo"], "dual-batch overlap"),
    "speculative": (["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 2,'
                     ' "prompt_lookup_max": 3}'], "speculative decoding"),
    "dcp": (["--decode-context-parallel-size", "2"], "context parallelism"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_serve_refuses_before_the_engine(name, model_dir, capsys):
    flags, why = REFUSED[name]
    with pytest.raises(UnsupportedEngine, match=why):
        build_config(["--model", str(model_dir), *flags])
    assert main(["--model", str(model_dir), *flags]) == 2
    assert why in capsys.readouterr().err


def test_servable_configurations_pass(model_dir):
    build_config(["--model", str(model_dir), "--tensor-parallel-size", "3"])
    build_config(["--model", str(model_dir), "--enforce-eager", "--enable-lora"])


def test_all_refusals_are_named_together():
    why = refusals(EngineFeatures(pipeline_parallel=2, speculative=True, dbo=True))
    assert len(why) == 3


@pytest.mark.parametrize("kwargs, why", [
    ({"pipeline_parallel_size": 2}, "pipeline"),
    ({"enable_dbo": True}, "dual-batch"),
    ({"ubatch_size": 4}, "micro-batching"),
    ({"decode_context_parallel_size": 2, "tensor_parallel_size": 2}, "context parallelism"),
])
def test_worker_side_check_reads_vllms_parallel_config(kwargs, why):
    cfg = SimpleNamespace(parallel_config=ParallelConfig(**kwargs), speculative_config=None)
    with pytest.raises(UnsupportedEngine, match=why):
        check(EngineFeatures.of_vllm_config(cfg))
    check(EngineFeatures.of_vllm_config(SimpleNamespace(parallel_config=ParallelConfig(),
                                                        speculative_config=None)))
