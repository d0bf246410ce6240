"""The pieces of bench/vs_plain_vllm.py (vsteer against plain vLLM, both measured by
`vllm bench serve`); the entry point puts bench/ on sys.path and imports them as
`vs_plain.<module>`.

    common   the bench directory, BenchError, log
    configs  the engine/request shape, the five configurations and their artifacts
    servers  starting, health-waiting and stopping plain vLLM and `vsteer serve`
    client   the control sanity check and the `vllm bench serve` client runs
    summary  paired ratios, the markdown table and the JSON record
"""
