"""Host and accelerator use for the status bar: CPU, RAM, and per CUDA device its utilisation and memory.

Cheap enough to call every second. CPU % is measured between two calls (psutil): creating the SystemMonitor
starts the first interval, so the first status request already reads a real figure.

CUDA devices come from `millm.placement.gpu_stats` (listed only where CUDA is present; see there for how memory
is read without opening a context).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from millm.placement import GpuStats, gpu_stats

__all__ = ["GpuStats", "HostStats", "SystemMonitor"]


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
        return gpu_stats()
