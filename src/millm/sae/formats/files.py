"""Reading the files SAE formats are made of, with errors that name the file. Shared by the format modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from millm.errors import NotFound, SaeError, SaeMismatch


@dataclass(frozen=True)
class SaeHint:
    """What a caller knows that the files may not say (npz files have no config): where the SAE came from
    and registry facts. Every field is optional."""

    repo_id: str | None = None  # e.g. google/gemma-scope-2b-pt-res
    subpath: str | None = None  # folder inside the repo, e.g. layer_12/width_16k/average_l0_82
    format: str | None = None  # force a format (see millm.sae.loading.FORMATS)
    norm_scaling_factor: float | None = None  # expected_average_only_in: fold this factor
    neuronpedia_id: str | None = None
    model_name: str | None = None
    hook_name: str | None = None  # override where the SAE reads
    d_in: int | None = None  # for formats that cannot tell d_in apart from d_sae


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise NotFound(f"SAE file not found: {path}")
    return path


def read_json(path: Path) -> dict[str, Any]:
    require_file(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SaeError(f"cannot parse {path}: {e}") from e
    if not isinstance(data, dict):
        raise SaeError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, Tensor]:
    require_file(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise SaeError(f"cannot read safetensors file {path}: {e}") from e


def read_torch(path: Path) -> dict[str, Any]:
    """A torch state_dict, read with weights_only=True (no arbitrary code runs)."""
    require_file(path)
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise SaeError(f"cannot read torch checkpoint {path} (weights_only): {e}") from e
    if not isinstance(data, dict):
        raise SaeError(f"{path}: expected a state_dict, found {type(data).__name__}")
    return data


def take(tensors: dict[str, Tensor], name: str, source: Path) -> Tensor:
    if name not in tensors:
        raise SaeError(f"{source}: missing tensor {name!r}; found {sorted(tensors)}")
    return tensors[name]


def orient(t: Tensor, shape: tuple[int, int], name: str, source: Path) -> Tensor:
    """Return t with the given 2-D shape, transposing when it is stored the other way round."""
    if tuple(t.shape) == shape:
        return t
    if tuple(t.shape) == shape[::-1] and shape[0] != shape[1]:
        return t.T
    raise SaeMismatch(f"{source}: tensor {name} should be {list(shape)} (or transposed), found {list(t.shape)}")


def vector(t: Tensor, n: int, name: str, source: Path) -> Tensor:
    """A [n] tensor; a scalar or a [1] tensor is broadcast (e.g. a global threshold)."""
    if t.numel() == 1:
        return t.reshape(()).expand(n).clone()
    if tuple(t.shape) != (n,):
        raise SaeMismatch(f"{source}: tensor {name} should be [{n}], found {list(t.shape)}")
    return t


def tensor_dtype(tensors: dict[str, Tensor]) -> str:
    for t in tensors.values():
        if isinstance(t, Tensor) and t.is_floating_point():
            return str(t.dtype).removeprefix("torch.")
    return "float32"
