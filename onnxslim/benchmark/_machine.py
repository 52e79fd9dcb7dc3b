"""Facts about the machine a benchmark ran on: CPU model, int8 instruction sets, GPUs, ORT build."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess

import onnxruntime as ort

__all__ = ["MachineInfo", "machine_info", "INT8_ISA_FLAGS"]

# /proc/cpuinfo flags that decide which int8 GEMM kernels ORT's MLAS can use.
INT8_ISA_FLAGS = (
    "avx2",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "asimddp",
    "i8mm",
)


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


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the model name from platform is all we have
        pass
    return model, flags


def _gpus() -> list[GpuInfo]:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        output = subprocess.run(
            [
                nvidia_smi,
                "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in output.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 3:
            memory = int(parts[1]) if parts[1].isdigit() else None
            gpus.append(GpuInfo(parts[0], memory, parts[2]))
    return gpus


def machine_info() -> MachineInfo:
    """CPU model and int8 flags from /proc/cpuinfo, GPUs from nvidia-smi, ORT version/providers."""
    model, flags = _cpuinfo()
    return MachineInfo(
        cpu_model=model,
        logical_cpus=os.cpu_count() or 1,
        int8_isa=[flag for flag in INT8_ISA_FLAGS if flag in flags],
        gpus=_gpus(),
        onnxruntime_version=ort.__version__,
        available_providers=ort.get_available_providers(),
        platform=platform.platform(),
        python=platform.python_version(),
    )
