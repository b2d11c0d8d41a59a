"""Which files of a Hub repo to fetch. Pure functions over file names; no I/O.

Models: weights (safetensors when the repo has any, else PyTorch ``.bin``), config,
generation config, tokenizer files and remote-code ``.py`` files at the repo root.
Sub-folders (``original/``, ``onnx/``, ``gguf/`` ...) are never fetched for a model.
SAEs: every file under the chosen folder (a Gemma Scope ``layer_N/width_W/...`` folder,
a SAELens folder with ``cfg.json`` + ``sae_weights.safetensors``), or the whole repo
when no folder is given.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from millm.errors import InvalidRequest, NotFound

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
)
TOKENIZER_PATTERNS = ("*.tiktoken", "tokenizer*.model")
CODE_PATTERNS = ("configuration_*.py", "modeling_*.py", "tokenization_*.py")

# transformers' own shard naming; other *.safetensors at the root (e.g. Mistral's
# consolidated.safetensors) duplicate the weights in another layout.
_HF_SAFETENSORS = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")
_HF_BIN = re.compile(r"^pytorch_model(-\d{5}-of-\d{5})?\.bin$")

SAE_MARKERS = ("cfg.json", "sae_weights.safetensors", "params.npz")


def _root(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if "/" not in n)


def select_weight_files(names: Iterable[str]) -> list[str]:
    """The weight files (and their shard index) to fetch; safetensors preferred over .bin."""
    root = _root(names)
    safetensors = [n for n in root if n.endswith(".safetensors")]
    if safetensors:
        preferred = [n for n in safetensors if _HF_SAFETENSORS.match(n)] or safetensors
        index = [n for n in root if n == "model.safetensors.index.json"]
        return preferred + index
    bins = [n for n in root if n.endswith(".bin") and n != "training_args.bin"]
    if bins:
        preferred = [n for n in bins if _HF_BIN.match(n)] or bins
        index = [n for n in root if n == "pytorch_model.bin.index.json"]
        return preferred + index
    return []


def select_model_files(names: Iterable[str]) -> list[str]:
    """All files a causal LM needs: weights, config, tokenizer and remote code."""
    names = list(names)
    weights = select_weight_files(names)
    if not weights:
        raise NotFound("The repo has no *.safetensors or *.bin weights at its root.", param="repo_id")
    root = _root(names)
    extra = [
        n
        for n in root
        if n in CONFIG_FILES
        or n in TOKENIZER_FILES
        or any(fnmatch.fnmatch(n, p) for p in TOKENIZER_PATTERNS + CODE_PATTERNS)
    ]
    if "config.json" not in extra:
        raise NotFound("The repo has no config.json at its root.", param="repo_id")
    return sorted(set(weights) | set(extra))


def normalize_sae_path(path: str | None) -> str:
    """'' for the repo root, else a folder path without leading or trailing slashes."""
    if not path:
        return ""
    clean = path.strip().strip("/")
    if ".." in clean.split("/"):
        raise InvalidRequest("An SAE path may not contain '..'.", param="path")
    return clean


def select_sae_files(names: Iterable[str], path: str | None) -> list[str]:
    """Every file in the SAE folder `path` (recursively); the whole repo for no path."""
    folder = normalize_sae_path(path)
    names = list(names)
    if not folder:
        chosen = [n for n in names if not n.startswith(".")]
    else:
        chosen = [n for n in names if n.startswith(folder + "/") or n == folder]
    if not chosen:
        raise NotFound(f"The repo has no SAE folder '{folder}'.", param="path")
    return sorted(chosen)


def looks_like_sae(names: Iterable[str]) -> bool:
    """Whether a set of file names holds an SAE (SAELens cfg/weights or Gemma Scope params.npz)."""
    basenames = {n.rsplit("/", 1)[-1] for n in names}
    return "params.npz" in basenames or {"cfg.json", "sae_weights.safetensors"} <= basenames
