# SPDX-License-Identifier: Apache-2.0
"""Brevitas' own networks, exported by Brevitas: every layer runs bit-serial and the outputs
equal the exporter's reference execution (qonnx for QONNX, onnxruntime for QCDQ) bit for bit.

Exports are cached by :mod:`tvm_qnn.testing.brevitas_models`; a cold cache costs about 3 s a
model.
"""

import logging
import sys

import numpy as np
import onnx
import pytest

import tvm_qnn

pytest.importorskip("brevitas", reason="brevitas is a test dependency (pip install .[test])")
qonnx = pytest.importorskip("qonnx")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402

from tvm_qnn.testing.brevitas_blocks import CONCAT  # noqa: E402
from tvm_qnn.testing.brevitas_models import (  # noqa: E402
    BNN_PYNQ,
    FOUR_BIT,
    BrevitasModel,
    brevitas_export,
    export_formats,
)
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


FOUR_BIT_CASES = [(m, fmt) for m in FOUR_BIT for fmt in export_formats(m)]


@pytest.mark.slow
@pytest.mark.parametrize("spec,fmt", FOUR_BIT_CASES,
                         ids=[f"{m.name}-{f}" for m, f in FOUR_BIT_CASES])
def test_four_bit_examples_run_bit_serial(spec, fmt):
    """ResNet-18 4w4a (residual adds, a classifier after AvgPool → Trunc), MobileNet-v1 4b and
    ProxylessNAS-Mobile 1.4 4b (depthwise convs with per-channel input scales; ProxylessNAS:
    inverted residuals): every layer with a quantized input runs bit-serial; only the first
    conv, which reads the float image, stays float."""
    model = onnx.load(brevitas_export(spec, fmt))
    art = tvm_qnn.compile(model, target="x86")
    first, *rest = art.layers
    assert first["reason"] == "input is not a dequantized quantized tensor"
    float_layers = [f"{r['name']}: {r['reason']}" for r in rest if not r["bitserial"]]
    assert not float_layers, float_layers
    assert {r["act_bits"] for r in rest} <= {4, 8}
    x = np.random.default_rng(0).random(spec.input_shape, dtype=np.float32)
    got, want = art.run(x), _reference(model, fmt, x)
    # Non-power-of-two scales: the reference's float convs round their sums, the accumulators
    # here are exact, so a code can land one step apart and the flip travels on through the
    # later layers: the logits agree closely, not bit for bit.
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


CONCAT_CASES = [(m, fmt) for m in CONCAT for fmt in export_formats(m)]


@pytest.mark.parametrize("spec,fmt", CONCAT_CASES,
                         ids=[f"{m.name}-{f}" for m, f in CONCAT_CASES])
def test_concatenated_activations_run_bit_serial_and_exact(spec, fmt, caplog):
    """Brevitas exports ``torch.cat`` as a Concat of dequantized tensors (QONNX: of ``Quant``
    outputs; QCDQ: of ``DequantizeLinear`` outputs). Parts that share a quantizer are one
    tensor of codes: every conv after a concat (beside a max pool, after a dense concat, on a
    pooled concat) runs bit-serial. Parts with two scales are not: that conv stays float and
    its reason names the Concat."""
    model = onnx.load(brevitas_export(spec, fmt))
    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        art = tvm_qnn.compile(model, target="x86")
    float_layers = [r["reason"] for r in art.layers if not r["bitserial"]]
    if spec.name == "concat_two_scales_2w2a":
        assert len(art.layers) == 2 and float_layers == [
            "input is a Concat of tensors with different scales/zero-points (0.25/0, 0.125/0): "
            "not one quantized tensor"]
    else:
        assert len(art.layers) == 5 and not float_layers, float_layers
        assert [r["act_bits"] for r in art.layers] == [4, 4, 2, 2, 2]
        # Every conv after a concat reads the concatenated codes channels-last, whichever
        # kernel it got on this CPU: the concats and the pool between them run NHWC.
        assert caplog.text.count("reads its input codes channels-last") == 3, caplog.text
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.normal(size=spec.input_shape).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _reference(model, fmt, x))


def _own_networks():
    """Small brevitas.nn networks of our own, with power-of-two scales (fixed-point
    quantizers) so the float references are exact: mixed precision, a residual block,
    depthwise → pointwise → depthwise, grouped convs."""
    import torch
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Uint8ActPerTensorFixedPoint,
    )

    def act(bits, signed=True):
        quant = Int8ActPerTensorFixedPoint if signed else Uint8ActPerTensorFixedPoint
        return QuantIdentity(act_quant=quant, bit_width=bits, return_quant_tensor=False)

    def relu(bits):
        return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits)

    def conv(cin, cout, bits, groups=1, k=3):
        return QuantConv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False,
                           weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=bits)

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = act(2)
            self.body = torch.nn.Sequential(conv(8, 8, 2), torch.nn.BatchNorm2d(8), relu(2),
                                            conv(8, 8, 2), torch.nn.BatchNorm2d(8))
            self.out = relu(2)
            self.head = torch.nn.Sequential(torch.nn.Flatten(), QuantLinear(
                8 * 8 * 8, 10, bias=False, weight_quant=Int8WeightPerTensorFixedPoint,
                weight_bit_width=2))

        def forward(self, x):
            x = self.inp(x)
            return self.head(self.out(x + self.body(x)))  # the add of two quantized tensors

    mixed = torch.nn.Sequential(
        act(4), conv(8, 16, 2), torch.nn.BatchNorm2d(16), relu(3),
        conv(16, 16, 3), torch.nn.BatchNorm2d(16), act(2), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), QuantLinear(16 * 4 * 4, 10, bias=False,
                                        weight_quant=Int8WeightPerTensorFixedPoint,
                                        weight_bit_width=4))
    depthwise = torch.nn.Sequential(  # each conv's codes pass channels-last to the next
        act(4), conv(8, 8, 4, groups=8), torch.nn.BatchNorm2d(8), relu(4),
        conv(8, 16, 4, k=1), torch.nn.BatchNorm2d(16), relu(4),
        conv(16, 16, 4, groups=16), torch.nn.BatchNorm2d(16), relu(4),
        torch.nn.Flatten(), QuantLinear(16 * 8 * 8, 10, bias=False,
                                        weight_quant=Int8WeightPerTensorFixedPoint,
                                        weight_bit_width=4))
    grouped = torch.nn.Sequential(  # groups of 4 and of 2 input channels
        act(2), conv(8, 16, 2, groups=2), torch.nn.BatchNorm2d(16), relu(2),
        conv(16, 16, 3, groups=8), torch.nn.BatchNorm2d(16), relu(3),
        torch.nn.Flatten(), QuantLinear(16 * 8 * 8, 10, bias=False,
                                        weight_quant=Int8WeightPerTensorFixedPoint,
                                        weight_bit_width=2))
    return {"mixed": mixed, "residual": Residual(), "depthwise": depthwise, "grouped": grouped}


@pytest.mark.parametrize("fmt", ["qonnx", "qcdq"])
@pytest.mark.parametrize("name", ["mixed", "residual", "depthwise", "grouped"])
def test_own_brevitas_networks_run_bit_serial_and_exact(name, fmt, tmp_path, caplog):
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    torch.manual_seed(0)
    net = _own_networks()[name]
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(16, 8, 8, 8))
    net.eval()
    path = str(tmp_path / f"{name}.onnx")
    example = torch.randn(1, 8, 8, 8)
    if fmt == "qonnx":
        from qonnx.util.cleanup import cleanup

        export_qonnx(net, example, export_path=path)
        cleanup(path, out_file=path)
    else:
        export_onnx_qcdq(net, example, export_path=path)
    model = onnx.load(path)
    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        art = tvm_qnn.compile(model)
    float_layers = [f"{r['name']}: {r['reason']}" for r in art.layers if not r["bitserial"]]
    assert not float_layers, float_layers
    if name == "depthwise":  # whichever kernel each conv got on this CPU
        assert caplog.text.count("reads its input codes channels-last") == 2, caplog.text
    for seed in range(2):
        x = np.random.default_rng(seed).normal(size=(1, 8, 8, 8)).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _reference(model, fmt, x))


def test_a_brevitas_module_compiles_through_its_qonnx_export():
    """``compile(module, example_inputs=…)`` on a Brevitas network exports it to QONNX itself
    (``torch.export`` would hand over fake-quantization arithmetic no layer matcher reads):
    every conv runs bit-serial, the outputs equal the PyTorch eval forward (power-of-two
    scales: exact), and the module is left in the mode it was in."""
    import torch

    from tvm_qnn.testing.brevitas_models import calibrated

    net = calibrated(CONCAT[0])
    x = torch.rand(CONCAT[0].input_shape)
    net.train()
    art = tvm_qnn.compile(net, example_inputs=x)
    assert net.training
    assert len(art.layers) == 5 and all(r["bitserial"] for r in art.layers), art.layers
    net.eval()
    for seed in range(2):
        xs = torch.randn(CONCAT[0].input_shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = net(xs).numpy()
        np.testing.assert_array_equal(art.run(xs.numpy()), want)


def test_a_brevitas_module_without_its_exporter_says_what_to_do(monkeypatch):
    import torch

    net = CONCAT[0].build()
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="example_inputs"):
        tvm_qnn.compile(net)
    monkeypatch.setitem(sys.modules, "qonnx.util.cleanup", None)  # as if not installed
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="export_qonnx"):
        tvm_qnn.compile(net, example_inputs=torch.rand(CONCAT[0].input_shape))


def test_a_batch_of_rows_passes_bit_planes_between_dense_layers(caplog):
    """LFC at 8 rows: each popcount dense layer after the first takes its input bit-planes
    from one vector pack of the previous layer's codes (three links where all four are; on the
    classes whose lookups take its W1A2 layers, the last one only), bit-exact against qonnx."""
    spec = BrevitasModel("lfc_1w2a", (8, 1, 28, 28), 1, 2)
    model = onnx.load(brevitas_export(spec, "qonnx"))
    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        art = tvm_qnn.compile(model, target="x86")
    assert all(r["bitserial"] for r in art.layers)
    links = sum(r["kernel"] == "bit-serial" for r in art.layers[1:])
    assert links >= 1 and caplog.text.count("reads its input codes channels-last") == links, \
        caplog.text
    x = np.random.default_rng(0).normal(size=spec.input_shape).astype(np.float32)
    np.testing.assert_array_equal(art.run(x), _reference(model, "qonnx", x))
