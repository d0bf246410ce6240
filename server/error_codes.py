"""The one vocabulary for `error.code` in vsteer's HTTP errors (OpenAI shape). Every
literal code in server/ and vsteer/ must be listed here (tests/test_error_codes.py)."""

# Kinds `load_artifact` resolves (artifact_access.LABELS); each has an unknown_<kind>.
ARTIFACT_KINDS = ("vector", "direction", "controller", "probe", "exit", "sae", "experts")

ERROR_CODES = frozenset({
    # An artifact named in a request or a /v1/control route.
    *(f"unknown_{kind}" for kind in ARTIFACT_KINDS),  # no artifact of that kind and name
    "artifact_not_allowed",  # 403: the tenant's policy does not allow that artifact
    "artifact_invalid",  # the stored file or the upload is unreadable, or its name is bad
    "artifact_exists",  # 409: an upload over an existing name without ?overwrite=true
    "artifact_mismatch",  # two artifacts that do not belong together (controller, direction)
    "wrong_model",  # the artifact was made for another model (fingerprint mismatch)
    "not_calibrated",  # a refusal direction without the guard calibration the mode needs
    "probe_not_calibrated",  # a probe without the risk calibration max_error needs
    "vector_not_calibrated",  # a vector without the dose curve kl needs
    # A request field.
    "invalid_json",  # the body is not valid JSON, or not a JSON object
    "body_too_large",  # 413: the body is over the size limit
    "invalid_value",  # a value is malformed, non-finite or fails validation
    "missing_field",  # a field the chosen mode requires is absent
    "unknown_field",  # a field the schema does not have
    "conflicting_fields",  # two fields that exclude each other are both given
    "field_not_applicable",  # a field (or value) that does not apply here
    "scale_out_of_range",  # a scale that is non-finite or beyond --max-abs-scale
    "layer_out_of_range",  # a layer index outside the model
    "layer_not_in_artifact",  # a layer the named vector has no direction at
    "kl_out_of_range",  # a kl target the vector's dose curve cannot reach
    "max_error_unattainable",  # a max_error the probe's risk calibration cannot promise
    "target_agreement_unattainable",  # above the exit predictor's highest calibrated target
    "too_many_slots",  # more steering slots than the server has
    "capture_too_large",  # a capture above the server's bytes per reply
    "feature_out_of_range",  # an SAE feature index beyond the SAE's features
    "expert_out_of_range",  # an expert id beyond the model's router
    "layer_not_moe",  # a layer without a controllable mixture-of-experts block
    "too_many_experts",  # more forced than top-k, or fewer than top-k left on
    "not_supported",  # the server's configuration cannot do it (exit without eager mode)
    "unsupported_combination",  # two features that cannot be served together
    "unknown_request",  # 404: no trace of that control.request_id (unknown or aged out)
    # Access.
    "invalid_api_key",  # 401: the API key is missing or wrong
    "operator_only",  # 403: needs the admin key (or a policy that allows it)
    "control_locked",  # 403: the operator fixed this control for the tenant
    "rate_limit_exceeded",  # 429: the key's rate bucket is empty (see Retry-After)
    # Server state.
    "server_shutting_down",  # 503: draining for shutdown; retry on another replica
    "engine_unhealthy",  # 503 on /health: the engine's health check failed
    "engine_error",  # 5xx from vLLM's own handler
    # Entries of a response's control.errors (the request itself succeeded).
    "control_not_applied",  # the worker could set up none of the request's controls
    "not_scored",  # a job's layer did not run in its step (early exit), so it is null
    "report_incomplete",  # the worker's report lacks a part after the deadline
})
