"""Preemptive hallucination probes: QA data, probe training, evaluation."""
