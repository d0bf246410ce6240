"""Offline tooling of the `experts` control: find expert sets (MoTE's recipe)."""
