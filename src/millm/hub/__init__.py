"""Models and SAEs from the Hugging Face Hub: download, cache and memory estimates.

- `files`: which files of a repo a pull fetches (pure).
- `remote`: endpoint resolution, download plans, Hub error -> `millm.errors` translation.
- `download`: fetch a plan into the HF cache with progress and cancel; `pull_model`, `pull_sae`.
- `jobs`: `JobManager`, downloads as background jobs with events, persisted for resume.
- `events`: thread-safe / asyncio subscriptions to job events.
- `cache`: list and delete cached repos; `CacheIndex` for SAE tags and last use.
- `memory`: parameter counts from safetensors headers, memory estimate and fit check.

No module here imports fastapi; none returns absolute paths meant for API responses
(`cache.local_path` is for loaders only).
"""
