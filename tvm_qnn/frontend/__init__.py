# SPDX-License-Identifier: Apache-2.0
"""Model importers: everything becomes a Relax ``IRModule`` with a ``main`` function."""

from __future__ import annotations

import os

import tvm

from ..errors import UnsupportedModelError
from .onnx import load_onnx

__all__ = ["load_model", "load_onnx"]


def _is_torch(model) -> bool:
    mod = type(model).__module__
    return mod.startswith("torch") or any(
        c.__module__.startswith("torch") for c in type(model).__mro__[1:])


def load_model(model, shapes: dict | None = None, example_inputs=None) -> tvm.IRModule:
    """Import ``model``: a Relax ``IRModule``, an ``onnx.ModelProto``, a path to ``.onnx``,
    a ``torch.nn.Module`` (with ``example_inputs``; a Brevitas one goes through its QONNX
    export, :func:`~.brevitas.load_brevitas`) or a ``torch.export.ExportedProgram``."""
    if isinstance(model, tvm.IRModule):
        if "main" not in {gv.name_hint for gv in model.get_global_vars()}:
            raise UnsupportedModelError("the IRModule has no 'main' function")
        return model
    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):
            raise UnsupportedModelError(f"no model file at {model}")
        return load_onnx(model, shapes)
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        onnx = None
    if onnx is not None and isinstance(model, onnx.ModelProto):
        return load_onnx(model, shapes)
    if _is_torch(model):
        from .brevitas import is_brevitas, load_brevitas
        from .torch import load_torch

        if is_brevitas(model):
            return load_brevitas(model, example_inputs, shapes)

        return load_torch(model, example_inputs)
    raise UnsupportedModelError(
        f"cannot compile a {type(model).__name__}: pass an onnx.ModelProto, a path to an .onnx "
        "file, a torch nn.Module / ExportedProgram or a Relax IRModule")
