# SPDX-License-Identifier: Apache-2.0
"""x86 target: AVX-512 VPOPCNTDQ (512-bit ``vpopcntq``) when the CPU has it, else AVX2."""

from __future__ import annotations

import functools
import os

import tvm

from ..cpu_schedule import CpuKnobs, CpuTarget

__all__ = ["X86Target", "host_cpu_flags"]


@functools.lru_cache(maxsize=1)
def host_cpu_flags() -> frozenset[str]:
    """CPU feature flags of this host (from /proc/cpuinfo; empty if unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


class X86Target(CpuTarget):
    """This host's x86 CPU (or an explicit ``mcpu``)."""

    name = "x86"

    def __init__(self, mcpu: str | None = None, num_cores: int | None = None,
                 knobs: CpuKnobs | None = None):
        self.mcpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
        self.num_cores = num_cores or len(os.sched_getaffinity(0))
        flags = host_cpu_flags() if mcpu is None else frozenset()
        self.has_vpopcntdq = "avx512_vpopcntdq" in flags or self._mcpu_has_vpopcnt(self.mcpu)
        # The W1A1 register tile was measured with VPOPCNTDQ only (see CpuKnobs).
        self.knobs = knobs or CpuKnobs(single_branch=(2, 2, 32) if self.has_vpopcntdq else None)
        # 16 uint64 lanes = two zmm per tile row with VPOPCNTDQ; 8 (two ymm) on AVX2.
        self.oc_block = self.knobs.oc_block or (16 if self.has_vpopcntdq else 8)
        self.word_bits = self.knobs.word_bits or 64
        self.integer_min_branches = self.knobs.integer_min_branches
        self.single_branch_oc_block = (self.knobs.single_branch[2] if self.knobs.single_branch
                                       else None)

    @staticmethod
    def _mcpu_has_vpopcnt(mcpu: str) -> bool:
        return mcpu in {"icelake-client", "icelake-server", "tigerlake", "sapphirerapids",
                        "emeraldrapids", "graniterapids", "znver4", "znver5", "cooperlake",
                        "rocketlake", "alderlake-avx512"}

    @property
    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target({"kind": "llvm", "mcpu": self.mcpu,
                                  "num-cores": self.num_cores})

    def schedule_keys(self):
        isa = "avx512-vpopcntdq" if self.has_vpopcntdq else "avx2"
        return [(f"x86-{self.mcpu}", "exact device"), (f"x86-{isa}", "device class")]

    def describe(self) -> str:
        isa = "AVX-512 VPOPCNTDQ" if self.has_vpopcntdq else "AVX2"
        return f"x86 ({self.mcpu}, {isa}, {self.num_cores} cores)"
