"""Custom ops of the control runtime; importing this package registers them:
torch.ops.vsteer.steer_apply, .score_jobs, .decide, .probe_score and .exit_confidence."""

from vsteer.kernels import decide_op, exit_op, jobs_op, probe_op, steer_op  # noqa: F401  (registration)
