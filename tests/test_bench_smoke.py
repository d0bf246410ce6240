"""The benchmarks also run (small, on CPU) so they cannot rot between the sessions that
record their results (the GPU ones need a GPU session)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_kernels_benchmark_runs():
    text = _run(str(BENCH / "kernels.py"), "--quick", "--device", "cpu")
    assert "| steer_apply add |" in text
    assert text.count("| score_jobs, table of") == 2  # with and without jobs at the layer


def test_decode_overhead_benchmark_runs():
    text = _run(str(BENCH / "decode_overhead.py"), "--tiny")
    assert "ratio" in text and "steer backend torch-cpu, job backend torch-cpu" in text


def test_graph_replay_check_runs():
    """The GPU session's CUDA-graph check, as plain calls on CPU: every step equal."""
    text = _run(str(BENCH / "graph_replay.py"), "--device", "cpu", "--hidden", "256")
    assert text.count(": ok") == 4 and "all equal" in text


def test_probe_ttft_benchmark_runs(model_dir, artifacts, probe_artifacts):
    from conftest import PROBE

    text = _run(str(BENCH / "probe_ttft.py"), "--model", str(model_dir), "--artifacts",
                str(artifacts), "--probe", PROBE, "--repeats", "2", "--batch", "4")
    assert "on/off ratio" in text


def test_early_exit_benchmark_runs(model_dir, artifacts, exit_artifacts, tmp_path):
    import json

    from conftest import EXIT

    _run("-m", "vsteer.cli", "bench", "early-exit", "--model", str(model_dir),
         "--artifacts", str(artifacts), "--predictor", EXIT, "--out", str(tmp_path),
         "--limit", "2", "--max-tokens", "12", "--targets", "0.98", "--thresholds", "0.0")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["speedup"] > 0 and 0 <= report["token_agreement"] <= 1
    assert [c.get("target_agreement", c.get("threshold")) for c in report["curve"]] == [0.98, 0.0]
    every = report["curve"][1]  # threshold 0: every decode step exits at the first layer
    assert every["exited_tokens"] > 0.8 and every["saved_fraction"] > 0.5
    assert (tmp_path / "speedup_vs_agreement.png").stat().st_size > 0
