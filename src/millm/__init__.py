"""miLLM: an OpenAI-compatible inference server with SAE feature steering and monitoring."""

__version__ = "0.1.0"
