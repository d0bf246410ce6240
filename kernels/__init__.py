"""Custom ops of the control runtime; importing this package registers them:
torch.ops.vsteer.steer_apply, .score_jobs, .decide, .capture_rows, .sae_features,
.react_apply, .expert_mask and .expert_force."""

from vsteer.kernels import (  # noqa: F401  (registration)
    capture_op,
    decide_op,
    expert_route_op,
    installed_op,
    jobs_op,
    react_op,
    sae_features_op,
    steer_op,
)
