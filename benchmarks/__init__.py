"""miLLM benchmarks: the HTTP server against raw `model.generate` on the same model (`python -m benchmarks.run`)."""
