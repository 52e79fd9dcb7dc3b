"""Facts about the machine a figure was measured on: CPU model, int8 instruction sets, GPUs, ORT build."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess

import onnxruntime as ort

from onnxslim.runtime._cpu import INT8_ISA_FLAGS, cpu_features

__all__ = ["GpuInfo", "MachineInfo", "gpu_memory_used", "machine_info"]


@dataclasses.dataclass
class GpuInfo:
    name: str
    memory_total_mib: int | None
    driver: str | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MachineInfo:
    """What a reader needs to judge a latency figure: hardware, int8 ISA, ORT build."""

    cpu_model: str
    logical_cpus: int
    int8_isa: list[str]
    gpus: list[GpuInfo]
    onnxruntime_version: str
    available_providers: list[str]
    platform: str
    python: str

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["gpus"] = [gpu.to_dict() for gpu in self.gpus]
        return data

    def describe(self) -> str:
        isa = ", ".join(self.int8_isa) or "none of " + "/".join(INT8_ISA_FLAGS[:4])
        gpus = "; ".join(gpu.name for gpu in self.gpus) or "no GPU"
        return (
            f"{self.cpu_model} ({self.logical_cpus} logical CPUs; int8 ISA: {isa}); {gpus}; "
            f"onnxruntime {self.onnxruntime_version} [{', '.join(self.available_providers)}]"
        )


def _nvidia_smi(query: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi <query> --format=csv,noheader,nounits``; None without nvidia-smi."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        output = subprocess.run(
            [executable, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[part.strip() for part in line.split(",")] for line in output.strip().splitlines()]


def gpu_memory_used(pid: int | None = None) -> int | None:
    """GPU memory (bytes) held by process ``pid`` (nvidia-smi); None without an NVIDIA GPU.

    In a container nvidia-smi may list host PIDs only; then the device-wide figure is used
    (other processes on the same GPU would then count too; the benchmark records a delta).
    """
    pid = os.getpid() if pid is None else pid
    apps = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if apps is None:
        return None
    mine = [
        int(row[1]) for row in apps if len(row) == 2 and row[0] == str(pid) and row[1].isdigit()
    ]
    if mine:
        return sum(mine) * 1024 * 1024
    devices = _nvidia_smi("--query-gpu=memory.used") or []
    used = [int(row[0]) for row in devices if row and row[0].isdigit()]
    return sum(used) * 1024 * 1024 if used else None


def _gpus() -> list[GpuInfo]:
    gpus = []
    for parts in _nvidia_smi("--query-gpu=name,memory.total,driver_version") or []:
        if len(parts) >= 3:
            memory = int(parts[1]) if parts[1].isdigit() else None
            gpus.append(GpuInfo(parts[0], memory, parts[2]))
    return gpus


def machine_info() -> MachineInfo:
    """CPU model and int8 flags (``cpu_features``), GPUs from nvidia-smi, ORT version/providers."""
    cpu = cpu_features()
    return MachineInfo(
        cpu_model=cpu.model,
        logical_cpus=os.cpu_count() or 1,
        int8_isa=cpu.int8_isa,
        gpus=_gpus(),
        onnxruntime_version=ort.__version__,
        available_providers=ort.get_available_providers(),
        platform=platform.platform(),
        python=platform.python_version(),
    )
