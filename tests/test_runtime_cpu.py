"""The one /proc/cpuinfo reader: model, flags, int8 instructions and ORT's conv channel block."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxslim.runtime import INT8_ISA_FLAGS, CpuFeatures, cpu_features, machine_info

X86_AVX512_VNNI = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""
X86_AVX2 = """processor\t: 0
model name\t: Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
flags\t\t: fpu sse sse2 avx avx2 fma
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes asimddp i8mm
CPU implementer\t: 0x41
Hardware\t: Neoverse-N2
"""


def test_x86_with_avx512_vnni():
    cpu = cpu_features(X86_AVX512_VNNI, "x86_64")
    assert (cpu.arch, cpu.vnni, cpu.amx, cpu.arm_dot, cpu.arm_i8mm) == (
        "x86",
        True,
        False,
        False,
        False,
    )
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"
    assert cpu.avx2 and cpu.avx512 and cpu.conv_channel_block == 16
    assert cpu.int8_isa == ["avx2", "avx512bw", "avx512_vnni"]
    assert cpu.describe() == "x86 (vnni)"


def test_x86_avx2_without_vnni():
    cpu = cpu_features(X86_AVX2, "x86_64")
    assert cpu == CpuFeatures(arch="x86")  # equality: capabilities, not the model or raw flags
    assert cpu.model == "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz"
    assert cpu.avx2 and not cpu.avx512 and cpu.conv_channel_block == 8
    assert cpu.int8_isa == ["avx2"]
    assert cpu.describe() == "x86 (no int8 dot-product instructions)"


def test_arm_dotprod_and_i8mm():
    cpu = cpu_features(ARM, "aarch64")
    assert (cpu.arch, cpu.arm_dot, cpu.arm_i8mm, cpu.vnni) == ("arm", True, True, False)
    assert cpu.model == "Neoverse-N2"
    assert not cpu.avx2 and cpu.conv_channel_block == 8
    assert cpu.int8_isa == ["asimddp", "i8mm"]
    assert cpu.describe() == "arm (arm_dot, arm_i8mm)"


def test_amx_and_flags_of_every_processor():
    text = "processor : 0\nflags : avx2\nprocessor : 1\nflags : avx2 amx_tile amx_int8\n"
    cpu = cpu_features(text, "x86_64")
    assert cpu.amx and cpu.int8_isa == ["avx2", "amx_tile", "amx_int8"]


def test_unknown_machine_without_cpuinfo():
    cpu = cpu_features("", "riscv64")
    assert cpu.arch == "other" and cpu.flags == frozenset() and cpu.conv_channel_block == 8
    assert cpu.model  # platform's processor or machine name


def test_this_machine_agrees_with_the_readers_it_replaces():
    """Pinned against the three parsers this one replaced (pruning, quantization, machine_info)."""
    from onnxslim.passes.pruning import cpu_channel_block
    from onnxslim.passes.quantization import target_profile

    cpu = cpu_features()
    assert cpu.conv_channel_block == cpu_channel_block()
    # quantization's profile of this machine reads this one parser (its own copy is gone)
    assert target_profile("cpu") == target_profile("cpu", cpu)
    info = machine_info()
    assert info.cpu_model == cpu.model and info.int8_isa == cpu.int8_isa
    if Path("/proc/cpuinfo").is_file():
        first_flags: set[str] = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                first_flags = set(line.split(":", 1)[1].split())
                break
        assert info.int8_isa == [flag for flag in INT8_ISA_FLAGS if flag in first_flags]


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "i686"])
def test_x86_by_machine_name_alone(machine):
    assert cpu_features("", machine).arch == "x86"
