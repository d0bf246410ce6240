"""Engine configurations the control runtime cannot serve correctly, refused before the
engine starts (`vsteer serve`) and again where the runtime is created (a worker of an
engine started some other way).

Why each one is refused:
- pipeline parallelism: a stage sees only its own layers, so a guard's force aimed at
  a later stage is never written, and every stage would report the same request;
- data parallelism: each rank is its own engine with its own worker runtime, reporting
  on one channel under one rank id (run replicas behind a load balancer instead);
- dual-batch overlap / micro-batching (`--enable-dbo`, `ubatch_size > 1`): the token
  plan's rows are offsets into the whole step, not into a micro-batch;
- speculative decoding: draft and verify tokens share a step, so per-token scores are
  misaligned with the accepted tokens, and vLLM loads no plugin logits processor
  (`abstain`) with it;
- decode / prefill context parallelism: a rank holds a slice of the sequence, so
  "the last prompt token" and token positions are not the runtime's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class UnsupportedEngine(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineFeatures:
    pipeline_parallel: int = 1
    data_parallel: int = 1
    dbo: bool = False
    ubatch_size: int = 0
    speculative: bool = False
    decode_context_parallel: int = 1
    prefill_context_parallel: int = 1

    @classmethod
    def of_engine_args(cls, a: Any) -> EngineFeatures:
        """From vLLM's `EngineArgs` (the server, before the engine exists)."""
        return cls(int(a.pipeline_parallel_size), int(a.data_parallel_size),
                   bool(a.enable_dbo), int(a.ubatch_size or 0), a.speculative_config is not None,
                   int(a.decode_context_parallel_size), int(a.prefill_context_parallel_size))

    @classmethod
    def of_vllm_config(cls, c: Any) -> EngineFeatures:
        """From a resolved `VllmConfig` (the worker)."""
        p = c.parallel_config
        return cls(int(p.pipeline_parallel_size), int(p.data_parallel_size),
                   bool(p.enable_dbo), int(p.ubatch_size or 0), c.speculative_config is not None,
                   int(p.decode_context_parallel_size), int(p.prefill_context_parallel_size))


def refusals(f: EngineFeatures) -> list[str]:
    """One line per unsupported feature, naming the option and why (empty: servable)."""
    out = []
    if f.pipeline_parallel > 1:
        out.append("pipeline parallelism (--pipeline-parallel-size > 1): a stage cannot "
                   "write forces or scores for layers on another stage; use "
                   "--tensor-parallel-size")
    if f.data_parallel > 1:
        out.append("data parallelism (--data-parallel-size > 1): run one vsteer replica "
                   "per data-parallel rank behind a load balancer")
    if f.dbo or f.ubatch_size > 1:
        out.append("dual-batch overlap / micro-batching (--enable-dbo, ubatch_size > 1): "
                   "vsteer's token rows are offsets into the whole step")
    if f.speculative:
        out.append("speculative decoding (--speculative-config): per-token scores would "
                   "not line up with accepted tokens, and abstain would not run")
    if f.decode_context_parallel > 1 or f.prefill_context_parallel > 1:
        out.append("context parallelism (--decode/--prefill-context-parallel-size > 1): "
                   "a rank holds only a slice of each sequence")
    return out


def check(f: EngineFeatures) -> None:
    if why := refusals(f):
        raise UnsupportedEngine("vsteer cannot serve this engine configuration:\n  - "
                                + "\n  - ".join(why))
