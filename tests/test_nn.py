# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.nn: the {-1,+1} encoder, its gradient, conversion, and bit-exact export."""

import numpy as np
import pytest
import torch
from torch import nn

import tvm_qnn
from tvm_qnn.nn import (
    QConv2d,
    Quantizer,
    decode_planes,
    encode_planes,
    export_onnx,
    init_from_higher_bit,
    quantize_model,
)
from tvm_qnn.testing.onnx_models import run_onnxruntime, run_reference


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_bipolar_codes_are_sums_of_signed_planes(bits):
    q = Quantizer(bits, "bipolar")
    x = torch.randn(1000) * 3
    codes = q.codes(x).detach()
    c = (1 << bits) - 1
    assert set(torch.unique(codes).tolist()) <= set(range(-c, c + 1, 2))  # odd levels only
    planes = encode_planes(codes, bits)
    assert set(torch.unique(planes).tolist()) <= {-1, 1}
    assert torch.equal(decode_planes(planes), codes.to(torch.int64))


@pytest.mark.parametrize("kind,bits,lo,hi", [("unsigned", 2, 0, 3), ("symmetric", 4, -7, 7),
                                             ("bipolar", 2, -3, 3)])
def test_code_range_and_straight_through_gradient(kind, bits, lo, hi):
    q = Quantizer(bits, kind)
    q.codes(torch.ones(4))  # initialise the step
    s = float(q.step().detach())
    x = torch.tensor([lo * s * 3 - 1.0, 0.4 * s, hi * s * 3 + 1.0], requires_grad=True)
    y = q(x)
    codes = (y / s).detach()
    assert codes.min() >= lo and codes.max() <= hi
    y.sum().backward()
    # d value / d x: 1 inside the representable range, 0 where the clamp saturates.
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    assert q.log_step.grad is not None and torch.isfinite(q.log_step.grad).all()


def test_steps_are_powers_of_two():
    q = Quantizer(3, "unsigned", channels=5)
    q.codes(torch.rand(5, 7))
    log2 = torch.log2(q.step())
    assert torch.equal(log2, torch.round(log2))


def test_bad_quantizer_arguments():
    with pytest.raises(ValueError, match="bits=9"):
        Quantizer(9)
    with pytest.raises(ValueError, match="at least 2 for symmetric"):
        Quantizer(1, "symmetric")
    with pytest.raises(ValueError, match="kind='ternary'"):
        Quantizer(2, "ternary")


def _net(bias=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=bias), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, groups=2, bias=bias), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, 10, bias=bias))


def test_quantize_model_policy():
    q = quantize_model(_net(), weight_bits=1, act_bits=2, first_last_bits=8)
    layers = [m for m in q.modules() if hasattr(m, "weight_quant")]
    assert [(m.weight_quant.bits, m.input_quant.bits, m.input_quant.kind) for m in layers] == [
        (8, 8, "symmetric"), (1, 2, "unsigned"), (1, 2, "unsigned"), (8, 8, "unsigned")]
    assert isinstance(layers[0], QConv2d)


def _trained_like(q):
    """Initialise the steps and BatchNorm statistics from a few batches."""
    q.train()
    with torch.no_grad():
        for seed in range(3):
            q(torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(100 + seed)))
    return q.eval()


def _inputs():
    return [torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(s))
            for s in range(3)]


@pytest.mark.parametrize("wbits,abits", [(1, 1), (1, 2), (2, 2), (4, 4)])
def test_pow2_export_is_exact_everywhere(wbits, abits):
    # Power-of-two steps, no bias: PyTorch, the ONNX reference, onnxruntime and the compiled
    # bit-serial code all compute the same float32 numbers.
    q = _trained_like(quantize_model(_net(bias=False), weight_bits=wbits, act_bits=abits))
    model = export_onnx(q, torch.zeros(1, 1, 12, 12))
    art = tvm_qnn.compile(model, target="x86")
    assert all(layer["bitserial"] for layer in art.layers)
    assert max(r["weight_bits"] for r in art.layers[1:3]) <= wbits
    for x in _inputs():
        with torch.no_grad():
            want = q(x).numpy()
        feeds = {"input": x.numpy()}
        np.testing.assert_array_equal(run_reference(model, feeds)[0], want)
        np.testing.assert_array_equal(run_onnxruntime(model, feeds)[0], want)
        np.testing.assert_array_equal(art.run(feeds), want)


@pytest.mark.parametrize("pow2", [True, False])
def test_batchnorm_and_any_step_compile_bit_exact_with_pytorch(pow2):
    q = quantize_model(_net(), weight_bits=2, act_bits=2, pow2=pow2, bn=True)
    q = _trained_like(q)
    assert q[2].bn is not None and q[2].bn.num_batches_tracked > 0
    model = export_onnx(q, torch.zeros(1, 1, 12, 12))
    art = tvm_qnn.compile(model, target="x86")
    assert all(layer["bitserial"] for layer in art.layers)
    for x in _inputs():
        with torch.no_grad():
            want = q(x).numpy()
        np.testing.assert_array_equal(art.run({"input": x.numpy()}), want)


def test_init_from_higher_bit():
    high = quantize_model(_net(), 4, 4)
    high(torch.randn(4, 1, 12, 12))
    low = init_from_higher_bit(quantize_model(_net(), 1, 1), high.state_dict())
    assert torch.equal(low[2].weight, high[2].weight)
    assert not bool(low[2].weight_quant.initialized)
    with pytest.raises(ValueError, match="no matching tensors"):
        init_from_higher_bit(low, {})


def test_export_errors_name_the_node():
    q = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(),
                                     nn.Linear(4 * 6 * 6, 2)), 2, 2)
    q(torch.randn(2, 1, 8, 8))
    with pytest.raises(tvm_qnn.UnsupportedModelError, match=r"node '_1' \(Sigmoid\)"):
        export_onnx(q, torch.zeros(1, 1, 8, 8))
    bip = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3)), 2, 2, first_last_bits=None)
    bip[0].input_quant = Quantizer(2, "bipolar")
    bip(torch.randn(2, 1, 8, 8))
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="bipolar activations"):
        export_onnx(bip, torch.zeros(1, 1, 8, 8))
