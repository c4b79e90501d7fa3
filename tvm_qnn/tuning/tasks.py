# SPDX-License-Identifier: Apache-2.0
"""Tuning tasks: the distinct bit-serial layer PrimFuncs of a model.

A task is a layer PrimFunc as the compile pipeline hands it to ``ScheduleBitserial``, with the
layer's name dropped so that layers of the same shape, bits and constants-free signature are
one task (the weights are arguments, so two 3×3 W1A1 convs of equal shape share a schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
import tvm_ffi

from ..topi.attrs import BITS_ATTR, INT_INPUT_BLOCK, KERNEL_ATTR, LAYER_ATTR, block_names


def workload(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The module a tuning database keys ``func`` by (layer name and symbol removed)."""
    for key in (LAYER_ATTR, "global_symbol"):
        if func.attrs is not None and key in func.attrs:
            func = func.without_attr(key)
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


@dataclass
class Task:
    """One distinct layer kernel and the layers that use it."""

    kind: str  # "conv2d" or "dense"
    bits: str  # e.g. "W1A1"
    mod: tvm.IRModule  # the workload
    layers: list[str] = field(default_factory=list)

    @property
    def integer(self) -> bool:
        """True for a plain integer kernel (``conv_layout="integer"``): no popcount loop."""
        return INT_INPUT_BLOCK in block_names(self.mod["main"])

    @property
    def name(self) -> str:
        """A readable task name: the first layer, and how many share it."""
        more = f"+{len(self.layers) - 1}" if len(self.layers) > 1 else ""
        return f"{self.layers[0]}{more}"


def extract_tasks(mod: tvm.IRModule) -> list[Task]:
    """The distinct bit-serial kernels of ``mod`` (the pipeline before scheduling)."""
    tasks: list[Task] = []
    for _, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None:
            continue
        kind = func.attrs.get(KERNEL_ATTR)
        if kind is None:
            continue
        key = workload(func)
        layer = str(func.attrs.get(LAYER_ATTR, "layer"))
        same = next((t for t in tasks if tvm_ffi.structural_equal(t.mod, key)), None)
        if same is None:
            tasks.append(Task(str(kind), str(func.attrs.get(BITS_ATTR, "")), key, [layer]))
        else:
            same.layers.append(layer)
    return tasks


__all__ = ["Task", "extract_tasks", "workload"]
