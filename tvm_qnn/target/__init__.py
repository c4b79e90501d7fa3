# SPDX-License-Identifier: Apache-2.0
"""Target aliases → :class:`~tvm_qnn.target.base.QnnTarget` backends."""

from __future__ import annotations

import tvm

from ..errors import TvmQnnError
from .base import QnnTarget
from .x86 import X86Target

__all__ = ["QnnTarget", "X86Target", "resolve_target"]

_ALIASES = {"x86": X86Target, "llvm": X86Target, "cpu": X86Target}


def resolve_target(target) -> QnnTarget:
    """Turn an alias (``"x86"``), a TVM ``Target``, a dict or a backend into a backend."""
    if isinstance(target, QnnTarget):
        return target
    if isinstance(target, str) and target in _ALIASES:
        return _ALIASES[target]()
    if isinstance(target, (dict, tvm.target.Target)):
        tgt = tvm.target.Target(target) if isinstance(target, dict) else target
        if tgt.kind.name == "llvm" and "x86" in str(tgt.attrs.get("mtriple", "x86_64")):
            return X86Target(mcpu=str(tgt.attrs.get("mcpu", "")) or None,
                             num_cores=int(tgt.attrs.get("num-cores", 0)) or None)
    raise TvmQnnError(f"unknown target {target!r}: use one of {sorted(_ALIASES)}, a TVM "
                      "Target or a target dict (arm_cpu and accel arrive with their issues)")
