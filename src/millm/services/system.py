"""Host and accelerator use for the status bar: CPU, RAM, and per CUDA device its utilisation and memory.

Cheap enough to call every second. CPU % is measured between two calls (psutil): creating the SystemMonitor
starts the first interval, so the first status request already reads a real figure.

CUDA: devices are listed only where CUDA is present. Memory comes from NVML when it is installed
(`torch.cuda.device_memory_used`, which opens no CUDA context), else from `torch.cuda.mem_get_info`, but only on
devices that already have a context (the model's), so that asking for the status never costs a GPU's memory.
Utilisation needs NVML (`nvidia-ml-py`); without it, it is null.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuStats:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int


@dataclass(frozen=True)
class HostStats:
    cpu_percent: float
    cpu_count: int
    ram_used_bytes: int
    ram_total_bytes: int
    process_rss_bytes: int
    process_cpu_percent: float


class SystemMonitor:
    def __init__(self) -> None:
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # prime: the next call measures from here
        self._process.cpu_percent(interval=None)

    def host(self) -> HostStats:
        vm = psutil.virtual_memory()
        return HostStats(
            cpu_percent=float(psutil.cpu_percent(interval=None)), cpu_count=psutil.cpu_count() or 1,
            ram_used_bytes=int(vm.total - vm.available), ram_total_bytes=int(vm.total),
            process_rss_bytes=int(self._process.memory_info().rss),
            process_cpu_percent=float(self._process.cpu_percent(interval=None)),
        )

    def gpus(self) -> list[GpuStats]:
        try:
            import torch

            if not torch.cuda.is_available():
                return []
            return [self._gpu(torch, i) for i in range(torch.cuda.device_count())]
        except Exception as exc:  # noqa: BLE001 - a status bar never fails on a driver hiccup
            log.debug("no GPU statistics: %s", exc)
            return []

    @staticmethod
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
