# SPDX-License-Identifier: Apache-2.0
"""Brevitas modules, compiled through Brevitas' own QONNX export.

``torch.export`` of a Brevitas network yields its fake-quantization arithmetic, which the
layer matcher does not read (every layer would stay float). Brevitas' QONNX exporter writes
the same network with its quantizers as ``Quant`` / ``BipolarQuant`` nodes, which the ONNX
frontend takes whole, so a Brevitas ``nn.Module`` is exported so (in eval mode, its mode
restored after), cleaned up with qonnx's ``cleanup`` and imported from the ONNX.
"""

from __future__ import annotations

import os
import tempfile

import tvm

from ..errors import UnsupportedModelError

__all__ = ["is_brevitas", "load_brevitas"]


def is_brevitas(model) -> bool:
    """Whether ``model`` is a ``torch.nn.Module`` with a Brevitas layer or quantizer in it."""
    modules = getattr(model, "modules", None)
    return callable(modules) and any(
        type(m).__module__.startswith("brevitas.") for m in modules())


def _export_qonnx(model, example_inputs, path: str) -> None:
    try:
        from brevitas.export import export_qonnx
        from qonnx.util.cleanup import cleanup
    except ImportError as err:
        raise UnsupportedModelError(
            f"compiling a Brevitas module needs brevitas and qonnx ({err}); or export it "
            "yourself with brevitas.export.export_qonnx and compile the .onnx file") from err
    training = model.training
    model.eval()
    try:
        export_qonnx(model, tuple(example_inputs), export_path=path)
    except Exception as err:  # noqa: BLE001 - the exporter's errors are untyped
        raise UnsupportedModelError(f"Brevitas' QONNX export failed: {err}") from err
    finally:
        model.train(training)
    cleanup(path, out_file=path)


def load_brevitas(model, example_inputs, shapes: dict | None = None) -> tvm.IRModule:
    """Import a Brevitas ``nn.Module`` by exporting it to QONNX with ``example_inputs`` (a
    tensor or a tuple of them: the compiled shapes)."""
    import onnx

    from .onnx import load_onnx

    if example_inputs is None:
        raise UnsupportedModelError("compiling an nn.Module needs example_inputs=(x,) "
                                    "(its shapes are compiled statically)")
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        _export_qonnx(model, example_inputs, path)
        proto = onnx.load(path)  # pulls in external data before the folder goes
    return load_onnx(proto, shapes)
