# SPDX-License-Identifier: Apache-2.0
"""ARM targets: aarch64 Linux with NEON (Raspberry Pi 3/4/5, Neoverse-N1) and armv7.

``"arm_cpu"`` is a Raspberry Pi 4 (cortex-a72, aarch64); ``"arm_cpu:<board>"`` picks a row of
:data:`BOARDS`, like TVM's old ``tvm.target.arm_cpu(model)``. Code is cross-compiled here
(Debian's ``gcc-aarch64-linux-gnu`` / ``gcc-arm-linux-gnueabihf`` link the shared library) and,
on a non-ARM host, aarch64 code runs under the emulated device of :mod:`.emulator`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import tvm

from ...errors import TvmQnnError
from ...topi.attrs import INT_INPUT_BLOCK, block_names
from ...topi.layout import Layout
from ..cpu import INTEGER_MIN_BRANCHES, CpuTarget, ScheduleConfig
from .emulator import EmulatedDevice

__all__ = ["BOARDS", "ArmBoard", "ArmTarget", "EmulatedDevice"]


@dataclass(frozen=True)
class ArmBoard:
    """One row of the board table."""

    mcpu: str
    arch: str  # "aarch64" or "armv7"
    cores: int
    clock_ghz: float  # for the llvm-mca speed model


BOARDS = {
    "rasp4b": ArmBoard("cortex-a72", "aarch64", 4, 1.5),
    "rasp5": ArmBoard("cortex-a76", "aarch64", 4, 2.4),
    "rasp3b-64": ArmBoard("cortex-a53", "aarch64", 4, 1.2),
    "neoverse-n1": ArmBoard("neoverse-n1", "aarch64", 4, 2.6),
    "rasp4b-32": ArmBoard("cortex-a72", "armv7", 4, 1.5),
    "rasp3b": ArmBoard("cortex-a53", "armv7", 4, 1.2),
}

_TRIPLES = {"aarch64": "aarch64-linux-gnu", "armv7": "armv7l-linux-gnueabihf"}
_COMPILERS = {"aarch64": "aarch64-linux-gnu-gcc", "armv7": "arm-linux-gnueabihf-gcc"}


class ArmTarget(CpuTarget):
    """An ARM board from :data:`BOARDS` (NEON popcount kernels)."""

    name = "arm_cpu"
    aliases = f"'arm_cpu' (a Raspberry Pi 4), 'arm_cpu:<board>' (boards: {', '.join(BOARDS)})"
    # Defaults from the llvm-mca model of the cortex-a72/a53 (``python -m bench.arm_model``):
    # byte words, because ``cnt`` counts bytes: ``eor`` + ``cnt`` + a byte ``add`` per 128
    # bits, widened once per chunk of words instead of three widening adds after every
    # ``cnt`` with 64-bit lanes; 64 output channels (four q registers) per broadcast
    # activation byte and 2 positions per register tile, so the ``ld1r`` broadcasts (which
    # use an ASIMD pipe too) cost one uop in 13.
    default_schedule_config = ScheduleConfig(ow_tile=2, row_tile=1)
    default_layout = Layout(oc_block=64, word_bits=8, integer_min_branches=INTEGER_MIN_BRANCHES)

    def __init__(self, board: str = "rasp4b", schedule_config: ScheduleConfig | None = None,
                 layout: Layout | None = None):
        if board not in BOARDS:
            raise TvmQnnError(f"unknown ARM board {board!r}: one of {sorted(BOARDS)}")
        self.board_name = board
        self.board = BOARDS[board]
        self.schedule_config = schedule_config or self.default_schedule_config
        self.layout = layout or self.default_layout

    @classmethod
    def parse(cls, spec):
        if isinstance(spec, str):
            if spec == cls.name or spec.startswith(f"{cls.name}:"):
                return cls(spec.partition(":")[2] or "rasp4b")
            return None
        if isinstance(spec, (dict, tvm.target.Target)):
            tgt = tvm.target.Target(spec) if isinstance(spec, dict) else spec
            triple = str(tgt.attrs.get("mtriple", ""))
            if tgt.kind.name != "llvm" or not triple.startswith(("aarch64", "arm")):
                return None
            arch = "aarch64" if triple.startswith("aarch64") else "armv7"
            mcpu = str(tgt.attrs.get("mcpu", ""))
            for name, board in BOARDS.items():
                if board.arch == arch and board.mcpu == (mcpu or board.mcpu):
                    return cls(name)
        return None

    @property
    def alias(self) -> str:
        """The string that selects this target: ``arm_cpu:<board>``."""
        return f"arm_cpu:{self.board_name}"

    @property
    def tvm_target(self) -> tvm.target.Target:
        spec = {"kind": "llvm", "mtriple": _TRIPLES[self.board.arch], "mcpu": self.board.mcpu,
                "mattr": ["+neon"], "num-cores": self.board.cores}
        if self.board.arch == "armv7":
            # gnueabihf: floats in VFP registers, as the Debian armhf toolchain links.
            spec.update(mattr=["+neon", "+vfp4", "+thumb2"], **{"mfloat-abi": "hard"})
        return tvm.target.Target(spec)

    @property
    def cross_compiler(self) -> str:
        """The gcc that links libraries for the board."""
        return _COMPILERS[self.board.arch]

    def schedule_keys(self):
        return [(f"arm-{self.board_name}", "exact device"),
                (f"{self.board.arch}-{self.board.mcpu}", "device class")]

    def why_not_here(self) -> str:
        machine = platform.machine()
        if (self.board.arch == "aarch64" and machine == "aarch64") or \
                (self.board.arch == "armv7" and machine.startswith("armv7")):
            return ""
        return f"{self.board.arch} code on a {machine} host"

    def rpc_device(self, key=None, tracker_port=None):
        if self.emulator() is None:
            return None
        from .device import EmulatedRPCDevice

        return EmulatedRPCDevice(key or self.board_name, tracker_port=tracker_port)

    def emulator(self) -> EmulatedDevice | None:
        # No armv7 TVM wheels exist, so only aarch64 code runs emulated.
        return EmulatedDevice() if self.board.arch == "aarch64" else None

    def describe(self) -> str:
        return f"{self.alias} ({self.board.mcpu}, {self.board.arch} NEON)"

    # -- the llvm-mca model of the board's core (aarch64: what qemu and LLVM both cover) -------

    def can_model(self, func) -> bool:
        # llvm-mca scores the xor-popcount loop; the integer kernel has none.
        return self.board.arch == "aarch64" and INT_INPUT_BLOCK not in block_names(func)

    def model_runner(self, funcs):
        if self.board.arch != "aarch64":
            return None
        from tvm.s_tir import meta_schedule as ms

        from .model_runner import ModelRunner, args_key, popcount_bytes

        return ModelRunner(self.board, {
            args_key(ms.arg_info.ArgInfo.from_prim_func(f)): popcount_bytes(f) for f in funcs})

    def model_seconds(self, scheduled, workload):
        if not self.can_model(workload):
            return None
        from .mca import kernel_seconds
        from .model_runner import popcount_bytes

        asm = tvm.compile(scheduled, self.tvm_target).mod.inspect_source("asm")
        return kernel_seconds(asm, popcount_bytes(workload), self.board.mcpu,
                              self.board.clock_ghz)
