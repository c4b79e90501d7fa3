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
