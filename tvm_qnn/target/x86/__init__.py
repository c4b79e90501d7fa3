# SPDX-License-Identifier: Apache-2.0
"""x86 target: AVX-512 VPOPCNTDQ (512-bit ``vpopcntq``) when the CPU has it, else AVX2.

``"x86"`` (also ``"llvm"``, ``"cpu"``) is this host's CPU (or the one ``TVM_QNN_X86_CPU``
names); ``"x86:<mcpu>"`` any x86 CPU LLVM
knows (e.g. ``x86:haswell``: the AVX2 code); a TVM ``Target`` or dict of kind ``llvm`` with an
x86 triple (or none) selects it too.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import replace

import tvm

from ... import knobs
from ...errors import InvalidArgumentError
from ...runtime.threads import default_threads
from ...topi.dot8_conv import DOT8_MOST_GROUPS
from ...topi.layout import KERNEL_FAMILIES, Layout
from ..cpu import INTEGER_MIN_BRANCHES, CpuTarget, ScheduleConfig, parallel_threshold
from .dot8 import (
    DOT8_TILES,
    FULL_RATE_VNNI_CPUS,
    dot8_kernel,
    dot_family,
    dot_step,
    lanes_of,
    narrow_lanes_of,
    step_lanes,
    tensorize_dot_steps,
)
from .lut import LUT_MAX_WEIGHT_BITS, lookup_step, lut_max_branches, tensorize_lookups

__all__ = ["VPSHUFB_DENSE_OC_VECTORS", "X86Target", "host_cpu_flags"]

_HOST_ALIASES = ("x86", "llvm", "cpu")


#: (word bits, output channels per weight vector) of the classes without VPOPCNTDQ: byte
#: words, faster than 64-bit ones there (measured in docs/cpu_kernels.md, "Byte words").
_BYTE_WORDS = (8, 32)

#: Weight vectors per register tile of a bit-serial dense layer on those classes: each
#: broadcast activation word then serves four vectors. Measured (``x86:haswell`` code, one Zen
#: 4 core, 4096 -> 4096, min of 3, ms with 1 / 2 / 4 vectors): 1 row W1A1 0.0465 / 0.0456 /
#: 0.0436, W1A2 0.122 / 0.095 / 0.091, W2A2 0.188 / 0.173 / 0.179; 64 rows W1A1 3.04 / 2.93 /
#: 2.85. With VPOPCNTDQ (``znver4``) one vector is as fast or faster (64 rows 1.05 / 1.29 /
#: 1.39), so those classes keep ``oc_vectors``.
VPSHUFB_DENSE_OC_VECTORS = 4


@functools.lru_cache(maxsize=1)
def _cpuinfo_field(name: str) -> str:
    """The first ``name`` line's value in /proc/cpuinfo ("" if missing or unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def host_cpu_flags() -> frozenset[str]:
    """CPU feature flags of this host (from /proc/cpuinfo; empty if unreadable)."""
    return frozenset(_cpuinfo_field("flags").split())


def host_is_xeon() -> bool:
    """Whether this host's CPU calls itself an Intel Xeon (/proc/cpuinfo's model name)."""
    return "Xeon" in _cpuinfo_field("model name")


# LLVM feature names of instruction-set extensions (the rest of its list tunes code generation,
# e.g. "fast-dpwssd"); the host must have each one the target's code may use.
_ISA_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "bmi", "popcnt", "lzcnt", "movbe", "gfni",
                 "vaes", "vpclmulqdq", "pclmul", "sha", "amx", "adx", "aes")


# /proc/cpuinfo names (normalized) that LLVM spells differently.
_CPUINFO_TO_LLVM = {"bmi1": "bmi", "abm": "lzcnt", "pclmulqdq": "pclmul", "pni": "sse3",
                    "shani": "sha"}


def _isa_name(flag: str) -> str:
    """A feature name as both LLVM (``avx512vpopcntdq``, ``sse4.2``) and /proc/cpuinfo
    (``avx512_vpopcntdq``, ``sse4_2``) can be compared: no ``_``, ``.`` or ``-``."""
    return flag.lower().replace("_", "").replace(".", "").replace("-", "")


@functools.lru_cache(maxsize=None)
def isa_features(mcpu: str) -> frozenset[str]:
    """The instruction-set extensions LLVM's ``mcpu`` may use (normalized names)."""
    from tvm.target.codegen import llvm_get_cpu_features

    features = llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return frozenset(_isa_name(f) for f in features if f.startswith(_ISA_PREFIXES))


@functools.lru_cache(maxsize=1)
def _llvm_x86_cpus() -> frozenset[str]:
    from tvm.target.codegen import llvm_get_cpu_archlist

    return frozenset(llvm_get_cpu_archlist(tvm.target.Target(
        {"kind": "llvm", "mtriple": "x86_64-linux-gnu"})))


@functools.lru_cache(maxsize=None)
def _is_64_bit(mcpu: str) -> bool:
    """Whether LLVM's ``mcpu`` runs x86-64 code (its feature ``64bit``)."""
    from tvm.target.codegen import llvm_get_cpu_features

    return "64bit" in llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))


def check_mcpu(mcpu: str, spec) -> None:
    """Raise a TvmQnnError unless ``mcpu`` is an x86-64 CPU LLVM knows.

    LLVM aborts the process (``LLVM ERROR: 64-bit code requested on a subtarget that doesn't
    support it!``) when asked for x86-64 code on a 32-bit-only CPU (i386 ... i686, pentium*,
    athlon-xp, ...): refused here, before code generation.
    """
    if mcpu not in _llvm_x86_cpus():
        raise InvalidArgumentError(f"target {spec!r}: LLVM knows no x86 CPU {mcpu!r} "
                                   "(e.g. haswell, skylake-avx512, znver4)")
    if not _is_64_bit(mcpu):
        raise InvalidArgumentError(
            f"target {spec!r}: {mcpu!r} is a 32-bit x86 CPU; tvm_qnn generates x86-64 code "
            "only (an x86-64 CPU: e.g. x86-64, haswell, skylake-avx512, znver4)")


class X86Target(CpuTarget):
    """This host's x86 CPU (or an explicit ``mcpu``)."""

    name = "x86"
    aliases = "'x86' (this CPU), 'x86:<mcpu>' (e.g. x86:haswell, the AVX2 code)"

    def __init__(self, mcpu: str | None = None, num_cores: int | None = None,
                 schedule_config: ScheduleConfig | None = None, layout: Layout | None = None):
        mcpu = mcpu or knobs.x86_cpu()
        if mcpu is not None:
            check_mcpu(mcpu, f"x86:{mcpu}")
        self.host = mcpu is None
        self.mcpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()
        self.num_cores = num_cores or len(os.sched_getaffinity(0))
        flags = host_cpu_flags() if self.host else frozenset()
        # LLVM's features of the mcpu, not a list of names: one had cooperlake, which has none.
        self.has_vpopcntdq = ("avx512_vpopcntdq" in flags
                              or "avx512vpopcntdq" in isa_features(self.mcpu))
        # Where byte dot products beat popcounts, and with which instructions.
        # A VM may report a client CPU model for a Xeon (LLVM named one such Sapphire Rapids
        # guest rocketlake): a host that calls itself a Xeon counts as one.
        self.full_rate_vnni = (self.mcpu in FULL_RATE_VNNI_CPUS
                               or (self.host and host_is_xeon()))
        dot = dot8_kernel(isa_features(self.mcpu), self.full_rate_vnni)
        self.dot_family = dot_family(isa_features(self.mcpu))
        if dot:  # tuning records replay their tensorize steps: the steps must be registered
            for groups in range(1, DOT8_MOST_GROUPS + 1):
                for lanes in step_lanes(self.dot_family):
                    dot_step(self.dot_family, groups, lanes)
            # Tuning times each family where a layer fits it; the table lookups replace
            # popcounts only where there is no vector popcount.
            self.kernel_families = tuple(f for f in KERNEL_FAMILIES
                                         if f != "lut" or not self.has_vpopcntdq)
        if not self.has_vpopcntdq:
            lookup_step()
        # The W1A1 register tile was measured with VPOPCNTDQ only (see ScheduleConfig).
        self.schedule_config = schedule_config or ScheduleConfig(
            single_branch_tile=(2, 2) if self.has_vpopcntdq else None,
            dense_oc_vectors=None if self.has_vpopcntdq else VPSHUFB_DENSE_OC_VECTORS,
            dot8_tile=DOT8_TILES.get(self.dot_family) if dot else None,
            min_parallel_popcounts=parallel_threshold(default_threads()))
        # VPOPCNTDQ: 64-bit words, 16 uint64 lanes = two zmm per tile row. Without it the
        # vpshufb popcount counts bytes, so byte words skip widening each word's count.
        words, oc_block = (64, 16) if self.has_vpopcntdq else _BYTE_WORDS
        self.layout = layout or Layout(
            oc_block=oc_block, word_bits=words,
            integer_min_branches=INTEGER_MIN_BRANCHES,
            single_branch_oc_block=32 if self.has_vpopcntdq else None,
            dot8_min_branches=dot[1] if dot else None,
            dot8_oc_block=lanes_of(self.dot_family) if self.dot_family else 8,
            dot8_narrow_oc_block=narrow_lanes_of(self.dot_family) if self.dot_family else None,
            lut_max_weight_bits=None if self.has_vpopcntdq else LUT_MAX_WEIGHT_BITS,
            lut_max_branches=lut_max_branches(self.dot_family))

    def for_threads(self, threads: int) -> X86Target:
        """This target for code run on ``threads`` threads: with several, smaller layers go
        parallel (:func:`~tvm_qnn.target.cpu.config.parallel_threshold`). A config whose
        threshold was set by hand keeps it."""
        config = self.schedule_config
        if config.min_parallel_popcounts not in (parallel_threshold(1), parallel_threshold(2)) \
                or config.min_parallel_popcounts == parallel_threshold(threads):
            return self
        mine = copy.copy(self)
        mine.schedule_config = replace(config, min_parallel_popcounts=parallel_threshold(threads))
        return mine

    @classmethod
    def parse(cls, spec):
        if isinstance(spec, str):
            if spec in _HOST_ALIASES:
                return cls()
            if not spec.startswith("x86:"):
                return None
            mcpu = spec.partition(":")[2]
            check_mcpu(mcpu, spec)
            return cls(mcpu=mcpu)
        if isinstance(spec, (dict, tvm.target.Target)):
            tgt = tvm.target.Target(spec) if isinstance(spec, dict) else spec
            if tgt.kind.name != "llvm" or "x86" not in str(tgt.attrs.get("mtriple", "x86_64")):
                return None
            mcpu = str(tgt.attrs.get("mcpu", "")) or None
            if mcpu is not None:
                check_mcpu(mcpu, spec)
            return cls(mcpu=mcpu, num_cores=int(tgt.attrs.get("num-cores", 0)) or None)
        return None

    @classmethod
    def register_tensor_intrinsics(cls) -> None:
        lookup_step()
        for family in ("avx2", "avx512", "vnni"):
            for groups in range(1, DOT8_MOST_GROUPS + 1):
                for lanes in step_lanes(family):
                    dot_step(family, groups, lanes)

    @property
    def alias(self) -> str:
        return self.name if self.host else f"{self.name}:{self.mcpu}"

    def lower_instructions(self, sch) -> None:
        """The int8-dot steps become this CPU's dot-product instructions, the table lookups
        byte shuffles."""
        if self.dot_family is not None:
            tensorize_dot_steps(sch, self.dot_family)
        tensorize_lookups(sch)

    def missing_features(self) -> list[str]:
        """The instruction-set extensions the target's code may use that this host's CPU
        lacks (empty: the code runs here)."""
        if self.host:
            return []
        flags = host_cpu_flags()
        if not flags:  # no /proc/cpuinfo: trust the caller
            return []
        have = {_CPUINFO_TO_LLVM.get(_isa_name(f), _isa_name(f)) for f in flags}
        return sorted(isa_features(self.mcpu) - have)

    def why_not_here(self) -> str:
        """Not '' when this host's CPU lacks an instruction-set extension of ``mcpu``
        (``x86:znver4`` code on an AVX2-only CPU would die of SIGILL)."""
        missing = self.missing_features()
        return f"this CPU has no {', '.join(missing)}" if missing else ""

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
