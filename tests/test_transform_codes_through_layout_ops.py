# SPDX-License-Identifier: Apache-2.0
"""CodesThroughLayoutOps: a transpose, reshape or scalar rescale between an activation
quantizer and a layer acts on the codes, and a zero padding joins the conv's own, so the layer
still reads dequantized codes. What is not exact stays as it is."""

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import CodesThroughLayoutOps, find_layers

W = np.ones((4, 4, 3, 3), "int8")


def test_a_transpose_and_a_rescale_act_on_the_codes():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "int8")):
            with R.dataflow():
                d = R.dequantize(x, R.const(0.25, "float32"), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                t = R.permute_dims(d, axes=[0, 1, 3, 2])
                m = R.multiply(R.const(2.0, "float32"), t)
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                y = R.nn.conv2d(m, w)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "int8")):
            with R.dataflow():
                t = R.permute_dims(x, axes=[0, 1, 3, 2])
                m = R.dequantize(t, R.const(0.5, "float32"), R.const(0, "int8"), axis=0,
                                 out_dtype="float32")
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                y = R.nn.conv2d(m, w)
                R.output(y)
            return y

    assert find_layers(Before["main"])[0].layer is None
    after = CodesThroughLayoutOps()(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    (match,) = find_layers(after["main"])
    assert match.layer is not None and match.layer.act_scale == 0.5


def test_a_zero_padding_of_rows_and_columns_joins_the_conv_padding():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                p = R.nn.pad(x, pad_width=[0, 0, 0, 0, 1, 2, 0, 1], pad_value=0.0)
                w = R.const(np.ones((4, 4, 3, 3), "float32"))
                y = R.nn.conv2d(p, w, padding=[1, 1, 1, 1])
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                w = R.const(np.ones((4, 4, 3, 3), "float32"))
                y = R.nn.conv2d(x, w, padding=[2, 1, 3, 2])
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(CodesThroughLayoutOps()(Before), Expected)


def _left_alone(case):
    scale = np.full((1, 4, 1, 1), 0.25, "float32") if case == "per-channel" else np.float32(0.25)
    value = 1.0 if case == "pad-one" else 0.0
    channels = [0, 0, 1, 0] if case == "pad-channels" else [0, 0, 0, 0]
    factor = -2.0 if case == "negative" else 2.0
    scale = scale.reshape(-1) if scale.size > 1 else scale
    weight = np.ones((4, 5 if channels[2] else 4, 3, 3), "float32")

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4, 8, 8), "int8")):
            with R.dataflow():
                d = R.dequantize(x, R.const(scale), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                t = R.permute_dims(d, axes=[0, 1, 3, 2])
                m = R.multiply(t, R.const(factor, "float32"))
                p = R.nn.pad(m, pad_width=[*channels, 1, 1, 1, 1], pad_value=value)
                y = R.nn.conv2d(p, R.const(weight))
                R.output(y)
            return y

    return Module


@pytest.mark.parametrize("case", ["per-channel", "negative", "pad-one", "pad-channels"])
def test_what_is_not_exact_stays_as_it_is(case):
    """A per-channel scale (the transpose would move its axis), a negative factor (a
    dequantize needs a positive scale), a padding value other than zero or a padding of the
    channels (a conv pads rows and columns with zeros only)."""
    before = _left_alone(case)
    ops = [b.value.op.name for b in CodesThroughLayoutOps()(before)["main"].body.blocks[0]
           .bindings]
    if case == "per-channel":
        assert ops.index("relax.dequantize") < ops.index("relax.permute_dims")
    elif case == "negative":
        assert "relax.multiply" in ops
    else:
        assert "relax.nn.pad" in ops
