# SPDX-License-Identifier: Apache-2.0
"""Model importers: everything becomes a Relax ``IRModule`` with a ``main`` function."""

from __future__ import annotations

import os

import tvm

from ..errors import UnsupportedModelError
from .onnx import load_onnx

__all__ = ["load_model", "load_onnx"]


def load_model(model, shapes: dict | None = None) -> tvm.IRModule:
    """Import ``model``: a Relax ``IRModule``, an ``onnx.ModelProto`` or a path to ``.onnx``."""
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
    raise UnsupportedModelError(
        f"cannot compile a {type(model).__name__}: pass an onnx.ModelProto, a path to an .onnx "
        "file or a Relax IRModule")
