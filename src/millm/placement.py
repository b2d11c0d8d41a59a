"""Where a model's weights live and in what precision, decided once.

A `Placement` is the device, dtype and quantization a model is (or would be) loaded with, with every "auto"
already resolved. It is the one answer that both the loader (`engine/model_loading.py`) and the memory
estimate (`hub/memory.py`) work from, so they cannot disagree about what "auto" means.

The rules for "auto" (as `Settings.device` and `Settings.dtype` describe them):
- device: CUDA when a GPU is visible, else the CPU.
- dtype on CUDA: bfloat16 where the GPU supports it, else float16 (bfloat16 when the GPU cannot be asked:
  an estimate for `cuda` made on a machine without one).
- dtype elsewhere: float32, except with bitsandbytes quantization, which keeps the non-quantized modules (and
  so the residual stream) in a 16-bit compute dtype: bfloat16.

This module imports torch only to answer "is a GPU there?" for "auto", so the CLI's estimate stays light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from millm.errors import InvalidRequest

log = logging.getLogger(__name__)

DeviceName = str  # "cpu", "cuda", "cuda:1", "mps"
DType = Literal["float32", "float16", "bfloat16"]
Quantization = Literal["none", "8bit", "4bit"]

DTYPE_NAMES: tuple[str, ...] = get_args(DType)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
DTYPE_BYTES: dict[str, float] = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}
QUANT_BYTES: dict[str, float] = {"8bit": 1.0, "4bit": 0.5}  # per quantized (2-D Linear) weight


@dataclass(frozen=True)
class Placement:
    """A resolved device, dtype and quantization; no field is "auto"."""

    device: DeviceName
    dtype: DType  # the compute dtype: weights' dtype unquantized, the residual stream's when quantized
    quantization: Quantization = "none"

    @property
    def device_kind(self) -> str:
        """"cuda" for "cuda:1", else the device name."""
        return self.device.split(":")[0]

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    @property
    def bytes_per_value(self) -> float:
        """Bytes of one activation or unquantized weight (the KV cache and the non-quantized layers)."""
        return DTYPE_BYTES[self.dtype]

    def torch_device(self) -> object:
        import torch

        return torch.device(self.device)

    def torch_dtype(self) -> object:
        import torch

        return getattr(torch, self.dtype)


def _cuda() -> tuple[bool, bool]:
    """(a GPU is visible, it supports bfloat16)."""
    import torch

    if not torch.cuda.is_available():
        return False, False
    return True, bool(torch.cuda.is_bf16_supported())


def resolve_placement(device: str = "auto", dtype: str = "auto", quantization: str = "none", *,
                      require_device: bool = False) -> Placement:
    """Resolve "auto" and check the combination. With `require_device` (loading, not estimating) a CUDA device
    must be there. Unknown names and float32 with quantization are an `InvalidRequest` naming the field."""
    if quantization not in QUANTIZATIONS:
        raise InvalidRequest(f"unknown quantization {quantization!r}; use none, 8bit or 4bit", param="quantization")
    if dtype != "auto" and dtype not in DTYPE_NAMES:
        raise InvalidRequest(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16", param="dtype")
    if not device or not device.strip():
        raise InvalidRequest("device is empty; use auto, cpu, cuda or mps", param="device")
    resolved = device
    bf16 = True
    if device == "auto" or device.startswith("cuda"):
        available, bf16 = _cuda()
        if device == "auto":
            resolved = "cuda" if available else "cpu"
        elif require_device and not available:
            raise InvalidRequest(f"device {device!r} was requested but CUDA is not available", param="device")
        elif not available:
            bf16 = True  # an estimate for a GPU this machine lacks: assume a current one
    if dtype == "auto":
        if resolved.startswith("cuda"):
            chosen = "bfloat16" if bf16 else "float16"
        else:
            chosen = "bfloat16" if quantization != "none" else "float32"
    else:
        if quantization != "none" and dtype == "float32":
            raise InvalidRequest(f"{quantization} quantization keeps the residual stream in float16/bfloat16; "
                                 "use dtype auto, float16 or bfloat16 with it", param="dtype")
        chosen = dtype
    return Placement(device=resolved, dtype=cast(DType, chosen), quantization=cast(Quantization, quantization))


# ---------------------------------------------------------------------------- memory on a device


@dataclass(frozen=True)
class MemoryInfo:
    device: str  # "cuda:0", or "cpu" for the host's RAM
    used_bytes: int
    total_bytes: int


def device_memory(device: str) -> MemoryInfo:
    """Used and total bytes of a CUDA device (`torch.cuda.mem_get_info`), else of the host's RAM (psutil)."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return MemoryInfo(device, int(total - free), int(total))
    import psutil

    vm = psutil.virtual_memory()
    return MemoryInfo("cpu", int(vm.total - vm.available), int(vm.total))


def device_present(device: str) -> bool:
    """Whether `device` (cpu, cuda, cuda:N, mps, auto) exists on this machine."""
    if device == "auto":
        return True
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if device.startswith("mps"):
        import torch

        return bool(torch.backends.mps.is_available())
    return True


def free_bytes(device: str) -> int:
    """Free bytes on `device` ("auto" resolved): CUDA free memory, else (mps: unified memory) the host's available
    RAM. InvalidRequest for a CUDA device this machine does not have."""
    if device == "auto":
        device = resolve_placement(device).device
    if device.startswith("cuda"):
        if not device_present(device):
            raise InvalidRequest(f"device {device!r} was requested but CUDA is not available", param="device")
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


# ---------------------------------------------------------------------------- accelerators, for the status bar


@dataclass(frozen=True)
class GpuStats:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int


def gpu_stats() -> list[GpuStats]:
    """Each CUDA device's utilisation and memory ([] without CUDA). Memory comes from NVML when it is installed
    (`torch.cuda.device_memory_used`, which opens no CUDA context), else from `torch.cuda.mem_get_info`, but only
    on devices that already have a context (the model's), so asking never costs a GPU's memory. Utilisation needs
    NVML (`nvidia-ml-py`); without it, it is None. Never raises: a status bar never fails on a driver hiccup."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [_gpu(torch, i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 - a status bar never fails on a driver hiccup
        log.debug("no GPU statistics: %s", exc)
        return []


def _gpu(torch: Any, index: int) -> GpuStats:
    props = torch.cuda.get_device_properties(index)
    used: int | None = None
    try:
        used = int(torch.cuda.device_memory_used(index))  # NVML, no context
    except Exception:  # noqa: BLE001 - NVML is optional
        if torch.cuda.is_initialized() and _has_context(torch, index):
            free, total = torch.cuda.mem_get_info(index)
            used = int(total - free)
    try:
        util: float | None = float(torch.cuda.utilization(index))
    except Exception:  # noqa: BLE001 - NVML is optional
        util = None
    return GpuStats(index=index, name=str(props.name), utilization_percent=util, memory_used_bytes=used,
                    memory_total_bytes=int(props.total_memory))


def _has_context(torch: Any, index: int) -> bool:
    """Whether this process already holds memory (hence a context) on the device."""
    try:
        return int(torch.cuda.memory_reserved(index)) > 0
    except Exception:  # noqa: BLE001
        return False
