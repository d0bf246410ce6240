"""Custom ops of the control runtime; importing this package registers them:
torch.ops.vsteer.steer_apply, .score_jobs and .decide."""

from vsteer.kernels import decide_op, jobs_op, steer_op  # noqa: F401  (registration)
