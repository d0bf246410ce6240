"""Refusal controls: direction extraction, guard calibration, the learned controller,
and evaluation (`vsteer refusal ...`, `vsteer eval refusal`)."""
