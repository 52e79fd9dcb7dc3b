"""The one /proc/cpuinfo reader: CPU model, flags and the int8 / vector features kernels depend on."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

__all__ = ["CpuFeatures", "cpu_features", "INT8_ISA_FLAGS"]

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
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni"})
_X86_MACHINES = ("x86_64", "amd64", "i686", "x86")
_MODEL_KEYS = ("model name", "hardware", "cpu model")


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """The CPU's integer dot-product instructions and vector width, from /proc/cpuinfo.

    Equality compares the capabilities (``arch`` and the int8 instructions); ``model`` and the raw
    ``flags`` describe the machine and are left out of it.
    """

    arch: str  # "x86" or "arm" or "other"
    vnni: bool = False  # AVX512-VNNI or AVX-VNNI: u8 x s8 dot products without saturation
    amx: bool = False  # AMX-INT8 tiles
    arm_dot: bool = False  # ARMv8.2 SDOT/UDOT ("asimddp")
    arm_i8mm: bool = False  # ARMv8.6 int8 matrix multiply
    model: str = dataclasses.field(default="", compare=False)
    flags: frozenset[str] = dataclasses.field(default=frozenset(), compare=False, repr=False)

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        """AVX-512 Foundation: ORT's NCHWc convolution then blocks channels by 16."""
        return "avx512f" in self.flags

    @property
    def conv_channel_block(self) -> int:
        """The channel block of ORT's NCHWc CPU convolution: 16 with AVX-512F, else 8."""
        return 16 if self.avx512 else 8

    @property
    def int8_isa(self) -> list[str]:
        """The flags of :data:`INT8_ISA_FLAGS` this CPU has, in that order."""
        return [flag for flag in INT8_ISA_FLAGS if flag in self.flags]

    def describe(self) -> str:
        found = [name for name in ("vnni", "amx", "arm_dot", "arm_i8mm") if getattr(self, name)]
        return f"{self.arch} ({', '.join(found) if found else 'no int8 dot-product instructions'})"


def _read_cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    try:
        return path.read_text(errors="replace") if path.is_file() else ""
    except OSError:  # not Linux, or unreadable: no flags
        return ""


def cpu_features(cpuinfo_text: str | None = None, machine: str | None = None) -> CpuFeatures:
    """Parses the CPU model and flags (``cpuinfo_text`` for tests; /proc/cpuinfo otherwise).

    Flags are the union of every processor's ``flags`` (x86) / ``Features`` (ARM) line; the model
    is the last ``model name`` / ``Hardware`` / ``cpu model`` line, else ``platform``'s name.
    """
    if cpuinfo_text is None:
        cpuinfo_text = _read_cpuinfo()
    machine = (machine or platform.machine()).lower()
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in _MODEL_KEYS and value.strip():
            model = value.strip()
    found = frozenset(flags)
    if machine in _X86_MACHINES or "avx2" in found or "sse2" in found:
        return CpuFeatures(
            arch="x86",
            vnni=bool(_VNNI_FLAGS & found),
            amx="amx_int8" in found,
            model=model,
            flags=found,
        )
    if machine.startswith(("arm", "aarch64")) or "asimd" in found:
        return CpuFeatures(
            arch="arm",
            arm_dot="asimddp" in found,
            arm_i8mm="i8mm" in found,
            model=model,
            flags=found,
        )
    return CpuFeatures(arch="other", model=model, flags=found)
