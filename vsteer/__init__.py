"""vsteer: per-request inference-time controls inside vLLM, behind an OpenAI API."""

__version__ = "0.1.0"
