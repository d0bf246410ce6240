"""Custom ops of the control runtime; importing this package registers them:
torch.ops.vsteer.steer_apply, .score_jobs, .decide and .capture_rows."""

from vsteer.kernels import capture_op, decide_op, jobs_op, steer_op  # noqa: F401  (registration)
