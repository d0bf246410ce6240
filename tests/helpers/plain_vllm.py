"""Greedy chat outputs from plain vLLM: the vsteer plugin is not loaded (VLLM_PLUGINS="").

stdin: {"model", "prompts", "max_tokens", "dtype"}; stdout: {"texts", "plugin_loaded"}.
"""

import json
import os
import sys

os.environ["VLLM_PLUGINS"] = ""  # load no general plugin, so vsteer's entry point is skipped
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: the check below is real

if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams
    from vllm.model_executor.models.llama import LlamaDecoderLayer

    llm = LLM(model=args["model"], enforce_eager=True, dtype=args["dtype"], max_model_len=1024)
    sp = SamplingParams(temperature=0.0, max_tokens=args["max_tokens"])
    texts = [llm.chat([{"role": "user", "content": p}], sp, use_tqdm=False)[0].outputs[0].text
             for p in args["prompts"]]
    loaded = bool(getattr(LlamaDecoderLayer, "_vsteer_patched", False))
    print(json.dumps({"texts": texts, "plugin_loaded": loaded}))
