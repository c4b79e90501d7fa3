# SPDX-License-Identifier: Apache-2.0
"""PoolQuantizedCodes: a max pooling between an activation quantizer and a layer pools the
codes, so the layer still reads dequantized codes (Brevitas' CNVs, QONNX and QCDQ)."""

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import PoolQuantizedCodes, find_layers


def _before(scale):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                q = R.quantize(x, R.const(scale), R.const(0, "int8"), axis=1, out_dtype="int8")
                c = R.clip(q, -2, 1)
                d = R.dequantize(c, R.const(scale), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                p = R.nn.max_pool2d(d, pool_size=[2, 2], strides=[2, 2])
                w = R.dequantize(R.const(np.ones((4, 4, 3, 3), "int8")),
                                 R.const(0.5, "float32"), R.const(0, "int8"), axis=0,
                                 out_dtype="float32")
                y = R.nn.conv2d(p, w)
                R.output(y)
            return y

    return Before


def test_max_pool_of_dequantized_codes_pools_the_codes():
    scale = np.float32(0.25)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                q = R.quantize(x, R.const(scale), R.const(0, "int8"), axis=1, out_dtype="int8")
                c = R.clip(q, -2, 1)
                p = R.nn.max_pool2d(c, pool_size=[2, 2], strides=[2, 2])
                d = R.dequantize(p, R.const(scale), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                w = R.dequantize(R.const(np.ones((4, 4, 3, 3), "int8")),
                                 R.const(0.5, "float32"), R.const(0, "int8"), axis=0,
                                 out_dtype="float32")
                y = R.nn.conv2d(d, w)
                R.output(y)
            return y

    before = _before(scale)
    assert find_layers(before["main"])[0].layer is None
    after = PoolQuantizedCodes()(before)
    tvm.ir.assert_structural_equal(after, Expected)
    (match,) = find_layers(after["main"])
    # The pooled codes keep the clip's range: 2-bit activations, not the int8 container's 8.
    assert match.layer is not None and (match.layer.act_lo, match.layer.act_bits) == (-2, 2)


@pytest.mark.parametrize("scale", [np.float32(-0.25),
                                   np.array([0.25, 0.5, -0.5, 1.0], "float32")],
                         ids=["negative", "negative_channel"])
def test_a_negative_scale_keeps_the_float_pool(scale):
    # dequantize is decreasing in q there: the maximum of the codes is the minimum value.
    before = _before(scale)
    tvm.ir.assert_structural_equal(PoolQuantizedCodes()(before), before)


def _pool_then_quantize(scale, pool_padding=(0, 0, 0, 0)):
    """conv → ReLU → MaxPool → quantizer, the FINN CNV order tvm_qnn's own CNVs export."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                r = R.nn.relu(x)
                p = R.nn.max_pool2d(r, pool_size=[2, 2], strides=[2, 2], padding=pool_padding)
                q = R.quantize(p, R.const(scale), R.const(0, "uint8"), axis=1,
                               out_dtype="uint8")
                c = R.clip(q, 0, 3)
                R.output(c)
            return c

    return Before


def test_a_quantizer_after_a_max_pool_moves_before_it():
    scale = np.float32(0.25)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                r = R.nn.relu(x)
                q = R.quantize(r, R.const(scale), R.const(0, "uint8"), axis=1,
                               out_dtype="uint8")
                c = R.clip(q, 0, 3)
                p = R.nn.max_pool2d(c, pool_size=[2, 2], strides=[2, 2])
                R.output(p)
            return p

    tvm.ir.assert_structural_equal(PoolQuantizedCodes()(_pool_then_quantize(scale)), Expected)


@pytest.mark.parametrize("scale", [np.float32(-0.25),
                                   np.array([0.25, 0.5, -0.5, 1.0], "float32")],
                         ids=["negative", "negative_channel"])
def test_a_quantizer_with_a_negative_scale_stays_after_the_pool(scale):
    # quantize is decreasing in x there: the code of the maximum is the smallest code.
    before = _pool_then_quantize(scale)
    tvm.ir.assert_structural_equal(PoolQuantizedCodes()(before), before)


def _run(mod, x):
    exe = tvm.compile(mod, "llvm")
    vm = tvm.relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (1, 1, 0, 0)])
def test_pooling_the_codes_gives_the_codes_of_the_pooled_values(padding):
    # Values on and around the rounding ties (odd multiples of scale / 2) and beyond the clip,
    # per channel scales: the codes of the maxima equal the maxima of the codes, padded too.
    scale = np.array([0.25, 0.5, 1.0, 0.125], "float32")
    before = _pool_then_quantize(scale, padding)
    rng = np.random.default_rng(0)
    x = (rng.integers(-40, 12, (1, 4, 8, 8)) * 0.0625).astype("float32")
    expected = _run(before, x)
    after = PoolQuantizedCodes()(before)
    assert str(after).index("R.quantize") < str(after).index("R.nn.max_pool2d")
    np.testing.assert_array_equal(_run(after, x), expected)
    assert len(np.unique(expected)) == 4  # every code of the 2-bit range occurs


def test_a_zero_point_along_a_pooled_axis_keeps_the_order():
    # One zero point per pooled column: 4 of them after the pool, 8 columns before it.
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                p = R.nn.max_pool2d(x, pool_size=[2, 2], strides=[2, 2])
                q = R.quantize(p, R.const(0.25, "float32"),
                               R.const(np.array([0, 1, 2, 3], "uint8")), axis=3,
                               out_dtype="uint8")
                R.output(q)
            return q

    tvm.ir.assert_structural_equal(PoolQuantizedCodes()(Before), Before)
