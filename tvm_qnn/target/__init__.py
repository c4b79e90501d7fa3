# SPDX-License-Identifier: Apache-2.0
"""Targets: one folder per kind of device, each behind :class:`~.base.QnnTarget`.

:func:`resolve_target` asks each target class in :data:`TARGETS` to parse the user's spec;
adding a target is a new folder and one entry there.
"""

from __future__ import annotations

import tvm

from ..errors import TvmQnnError
from .accel import AccelTarget
from .arm import BOARDS, ArmTarget
from .base import Offload, QnnTarget
from .x86 import X86Target

__all__ = ["TARGETS", "AccelTarget", "ArmTarget", "BOARDS", "Offload", "QnnTarget", "X86Target",
           "register_tensor_intrinsics", "resolve_target"]

#: The target classes, each parsing its own aliases (first match wins).
TARGETS: tuple[type[QnnTarget], ...] = (X86Target, ArmTarget, AccelTarget)


def register_tensor_intrinsics() -> None:
    """Register every target's tensor intrinsics: a tuning record's trace names the ones its
    schedule tensorizes with, and MetaSchedule cannot read it before they exist."""
    for cls in TARGETS:
        cls.register_tensor_intrinsics()


def resolve_target(target) -> QnnTarget:
    """Turn an alias (``"x86"``), a TVM ``Target``, a dict or a target object into a target."""
    if isinstance(target, QnnTarget):
        return target
    if isinstance(target, (str, dict, tvm.target.Target)):
        for cls in TARGETS:
            found = cls.parse(target)
            if found is not None:
                return found
    raise TvmQnnError(f"unknown target {target!r}: use "
                      + ", ".join(cls.aliases for cls in TARGETS)
                      + ", a TVM Target or a target dict")
