# SPDX-License-Identifier: Apache-2.0
"""Brevitas' own networks, exported by Brevitas: every layer runs bit-serial and the outputs
equal the exporter's reference execution (qonnx for QONNX, onnxruntime for QCDQ) bit for bit.

Exports are cached by :mod:`tvm_qnn.testing.brevitas_models`; a cold cache costs about 3 s a
model.
"""

import numpy as np
import onnx
import pytest

import tvm_qnn

pytest.importorskip("brevitas", reason="brevitas is a test dependency (pip install .[test])")
qonnx = pytest.importorskip("qonnx")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402

from tvm_qnn.testing.brevitas_models import BNN_PYNQ, brevitas_export, export_formats  # noqa: E402
from tvm_qnn.testing.onnx_run import run_onnxruntime  # noqa: E402

CASES = [(m, fmt) for m in BNN_PYNQ for fmt in export_formats(m)]


def _reference(model: onnx.ModelProto, fmt: str, x: np.ndarray) -> np.ndarray:
    name = model.graph.input[0].name
    if fmt == "qonnx":
        wrapped = ModelWrapper(model).transform(InferShapes())
        return list(execute_onnx(wrapped, {name: x}).values())[0]
    return run_onnxruntime(model, {name: x})[0]


@pytest.mark.parametrize("spec,fmt", CASES, ids=[f"{m.name}-{f}" for m, f in CASES])
def test_bnn_pynq_runs_bit_serial_and_exact(spec, fmt):
    model = onnx.load(brevitas_export(spec, fmt))
    art = tvm_qnn.compile(model, target="x86")
    float_layers = [f"{r['name']}: {r['reason']}" for r in art.layers if not r["bitserial"]]
    assert not float_layers, float_layers
    # Weight planes come from the values: Brevitas' 1-bit weights are one plane.
    hidden = art.layers[1:]  # the first layer reads the 8-bit image
    assert {r["weight_bits"] for r in hidden} == {spec.weight_bits}
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.random(spec.input_shape, dtype=np.float32)
        np.testing.assert_array_equal(art.run(x), _reference(model, fmt, x))
