"""One module per on-disk SAE format; each exposes `detect(folder) -> bool` and `load(path, hint) -> (SaeConfig,
tensors)` with tensors already in SAELens orientation. `millm.sae.loading` dispatches between them."""
