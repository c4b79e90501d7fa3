# SPDX-License-Identifier: Apache-2.0
"""Target aliases → :class:`~tvm_qnn.target.base.QnnTarget` backends."""

from __future__ import annotations

import tvm

from ..errors import TvmQnnError
from .accel import AccelTarget
from .arm import BOARDS, ArmTarget
from .base import QnnTarget
from .x86 import X86Target

__all__ = ["AccelTarget", "ArmTarget", "BOARDS", "QnnTarget", "X86Target", "resolve_target"]

_ALIASES = {"x86": X86Target, "llvm": X86Target, "cpu": X86Target}


def resolve_target(target) -> QnnTarget:
    """Turn an alias (``"x86"``), a TVM ``Target``, a dict or a backend into a backend."""
    if isinstance(target, QnnTarget):
        return target
    if isinstance(target, str) and target in _ALIASES:
        return _ALIASES[target]()
    if isinstance(target, str) and target.startswith("x86:"):  # another x86 CPU, by -mcpu
        mcpu = target.partition(":")[2]
        from tvm.target.codegen import llvm_get_cpu_archlist

        known = llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm",
                                                         "mtriple": "x86_64-linux-gnu"}))
        if mcpu not in known:
            raise TvmQnnError(f"target {target!r}: LLVM knows no x86 CPU {mcpu!r} "
                              "(e.g. haswell, skylake-avx512, znver4)")
        return X86Target(mcpu=mcpu)
    if isinstance(target, str) and (target == "accel" or target.startswith("accel:")):
        return AccelTarget(target.partition(":")[2] or None)
    if isinstance(target, str) and (target == "arm_cpu" or target.startswith("arm_cpu:")):
        return ArmTarget(target.partition(":")[2] or "rasp4b")
    if isinstance(target, (dict, tvm.target.Target)):
        tgt = tvm.target.Target(target) if isinstance(target, dict) else target
        triple = str(tgt.attrs.get("mtriple", "x86_64"))
        mcpu = str(tgt.attrs.get("mcpu", ""))
        if tgt.kind.name == "llvm" and "x86" in triple:
            return X86Target(mcpu=mcpu or None,
                             num_cores=int(tgt.attrs.get("num-cores", 0)) or None)
        if tgt.kind.name == "llvm" and triple.startswith(("aarch64", "arm")):
            arch = "aarch64" if triple.startswith("aarch64") else "armv7"
            for name, board in BOARDS.items():
                if board.arch == arch and board.mcpu == (mcpu or board.mcpu):
                    return ArmTarget(name)
    raise TvmQnnError(f"unknown target {target!r}: use one of {sorted(_ALIASES)}, "
                      "'x86:<mcpu>' (e.g. x86:haswell, the AVX2 code), 'arm_cpu', "
                      f"'arm_cpu:<board>' (boards: {', '.join(BOARDS)}), 'accel', "
                      "'accel:<config.json>', a TVM Target or a "
                      "target dict")
