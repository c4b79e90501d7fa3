# SPDX-License-Identifier: Apache-2.0
"""ConcatQuantizedCodes: a Concat of dequantized codes concatenates the codes, so the layer
after it still reads one quantized tensor (Brevitas' ``torch.cat``, QONNX and QCDQ)."""

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import ConcatQuantizedCodes, PoolQuantizedCodes, find_layers
from tvm_qnn.transform.concat_quantized_codes import CONCAT_RULES
from tvm_qnn.transform.graph_facts import FunctionFacts, rewrite_calls
from tvm_qnn.transform.pool_quantized_codes import POOL_RULES

W = np.ones((4, 6, 3, 3), "int8")
S = np.float32(0.25)
Z = np.int8(0)


def _before(s_y, z_y=Z, y_dtype="int8", axis_y=1):
    """``x`` (2 channels) and ``y`` (4 channels) quantized, dequantized, concatenated and
    convolved; ``y`` with the given scale / zero-point / codes type / axis."""

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                qx = R.quantize(x, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                cx = R.clip(qx, -2, 1)
                dx = R.dequantize(cx, R.const(S), R.const(0, "int8"), axis=1,
                                  out_dtype="float32")
                qy = R.quantize(y, R.const(s_y), R.const(z_y), axis=axis_y, out_dtype=y_dtype)
                cy = R.clip(qy, 0, 3)
                dy = R.dequantize(cy, R.const(s_y), R.const(z_y), axis=axis_y,
                                  out_dtype="float32")
                c = R.concat((dx, dy), axis=1)
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                out = R.nn.conv2d(c, w)
                R.output(out)
            return out

    return Before


def _layer(mod):
    (match,) = find_layers(mod["main"])
    return match


def test_concat_of_codes_with_one_scale_concatenates_the_codes():
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                qx = R.quantize(x, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                cx = R.clip(qx, -2, 1)
                qy = R.quantize(y, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                cy = R.clip(qy, 0, 3)
                c = R.concat((cx, cy), axis=1)
                d = R.dequantize(c, R.const(S), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                out = R.nn.conv2d(d, w)
                R.output(out)
            return out

    before = _before(S)
    assert _layer(before).layer is None
    after = ConcatQuantizedCodes()(before)
    tvm.ir.assert_structural_equal(after, Expected)
    # The codes range over both parts' ranges, [-2, 1] ∪ [0, 3]: 3 bits.
    layer = _layer(after).layer
    assert layer is not None and (layer.act_lo, layer.act_bits) == (-2, 3)


def test_codes_of_two_types_are_cast_to_one_that_holds_both():
    # QCDQ: a QuantReLU's codes are uint8, a signed QuantIdentity's int8.
    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                qx = R.quantize(x, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                cx = R.clip(qx, -2, 1)
                qy = R.quantize(y, R.const(S), R.const(0, "uint8"), axis=1, out_dtype="uint8")
                cy = R.clip(qy, 0, 3)
                c = R.concat((R.astype(cx, "int16"), R.astype(cy, "int16")), axis=1)
                d = R.dequantize(c, R.const(S), R.const(0, "int8"), axis=1,
                                 out_dtype="float32")
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                out = R.nn.conv2d(d, w)
                R.output(out)
            return out

    after = ConcatQuantizedCodes()(_before(S, np.uint8(0), "uint8"))
    tvm.ir.assert_structural_equal(after, Expected)
    layer = _layer(after).layer
    assert (layer.act_lo, layer.act_bits, layer.input_dtype) == (-2, 3, "int16")


def test_scales_per_channel_along_the_concat_axis_are_concatenated():
    s_y = np.array([0.25, 0.5, 0.5, 1.0], "float32")

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                qx = R.quantize(x, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                cx = R.clip(qx, -2, 1)
                qy = R.quantize(y, R.const(s_y), R.const(0, "int8"), axis=1, out_dtype="int8")
                cy = R.clip(qy, 0, 3)
                c = R.concat((cx, cy), axis=1)
                d = R.dequantize(c, R.const(np.concatenate([[S, S], s_y]).astype("float32")),
                                 R.const(np.zeros(6, "int8")), axis=1, out_dtype="float32")
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                out = R.nn.conv2d(d, w)
                R.output(out)
            return out

    after = ConcatQuantizedCodes()(_before(s_y))
    tvm.ir.assert_structural_equal(after, Expected)
    # A conv reducing over channels of different scales stays float, for that reason.
    assert "activation scale varies" in _layer(after).reason


@pytest.mark.parametrize("s_y,z_y,axis_y,reason", [
    (np.float32(0.5), np.int8(0), 1,
     "input is a Concat of tensors with different scales/zero-points (0.25/0, 0.5/0)"),
    (S, np.int8(1), 1,
     "input is a Concat of tensors with different scales/zero-points (0.25/0, 0.25/1)"),
    (np.full(8, S), np.int8(0), 2,
     "input is a Concat whose input 1 is quantized per channel along another axis than 1"),
], ids=["scale", "zero_point", "other_axis"])
def test_parts_of_different_quantizers_are_left_alone(s_y, z_y, axis_y, reason):
    # One scale per channel would be needed, which the conv cannot fold: it stays float, and
    # its reason names the Concat.
    before = _before(s_y, z_y, axis_y=axis_y)
    after = ConcatQuantizedCodes()(before)
    tvm.ir.assert_structural_equal(after, before)
    assert _layer(after).reason.startswith(reason)


def test_a_float_part_is_left_alone():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 4, 8, 8), "float32")):
            with R.dataflow():
                qy = R.quantize(y, R.const(S), R.const(0, "int8"), axis=1, out_dtype="int8")
                dy = R.dequantize(qy, R.const(S), R.const(0, "int8"), axis=1,
                                  out_dtype="float32")
                c = R.concat((x, dy), axis=1)
                w = R.dequantize(R.const(W), R.const(0.5, "float32"), R.const(0, "int8"),
                                 axis=0, out_dtype="float32")
                out = R.nn.conv2d(c, w)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(ConcatQuantizedCodes()(Before), Before)
    assert _layer(Before).reason == \
        "input is a Concat whose input 0 is not a dequantized quantized tensor"


def test_concatenated_codes_keep_the_union_of_ranges_and_a_shared_step():
    @R.function
    def main(x: R.Tensor((1, 2, 4, 4), "float32"), y: R.Tensor((1, 2, 4, 4), "float32")):
        with R.dataflow():
            bx = R.where(R.greater_equal(x, R.const(0.0)), R.const(1, "int8"), R.const(-1, "int8"))
            by = R.where(R.greater_equal(y, R.const(0.0)), R.const(3, "int8"), R.const(1, "int8"))
            bipolar = R.concat((bx, bx), axis=1)  # {-1, 1}: step 2
            odd = R.concat((bx, by), axis=1)  # {-1, 1, 3}: step 2
            mixed = R.concat((bx, R.clip(R.astype(y, "int8"), 0, 1)), axis=1)  # step 1
            R.output(bipolar, odd, mixed)
        return bipolar, odd, mixed

    facts = FunctionFacts(main)
    got = {v.name: (facts.code_range(v), facts.code_step(v)) for v in facts.order
           if v.name in ("bipolar", "odd", "mixed")}
    assert got == {"bipolar": ((-1, 1), 2), "odd": ((-1, 3), 2), "mixed": ((-1, 1), 1)}


def test_with_the_pool_rule_one_traversal_reaches_nested_concats_and_pools():
    # Inception: a block concatenates its convs with a max pool of its input, itself a
    # concat; the frontend runs both rules together.
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 8, 8), "float32"), y: R.Tensor((1, 2, 8, 8), "float32")):
            with R.dataflow():
                dx = R.dequantize(R.clip(R.quantize(x, R.const(S), R.const(0, "int8"), axis=1,
                                                    out_dtype="int8"), 0, 3),
                                  R.const(S), R.const(0, "int8"), axis=1, out_dtype="float32")
                dy = R.dequantize(R.clip(R.quantize(y, R.const(S), R.const(0, "int8"), axis=1,
                                                    out_dtype="int8"), 0, 1),
                                  R.const(S), R.const(0, "int8"), axis=1, out_dtype="float32")
                inner = R.concat((dx, dy), axis=1)
                pooled = R.nn.max_pool2d(inner, pool_size=[3, 3], padding=[1, 1, 1, 1])
                outer = R.concat((dx, pooled), axis=1)
                w = R.dequantize(R.const(np.ones((4, 6, 3, 3), "int8")), R.const(0.5, "float32"),
                                 R.const(0, "int8"), axis=0, out_dtype="float32")
                out = R.nn.conv2d(outer, w)
                R.output(out)
            return out

    once = PoolQuantizedCodes()(ConcatQuantizedCodes()(PoolQuantizedCodes()(Before)))
    assert _layer(once).layer is None  # pass by pass, the outer concat comes too early
    after = rewrite_calls(Before, POOL_RULES | CONCAT_RULES)
    layer = _layer(after).layer
    assert layer is not None and (layer.act_lo, layer.act_bits) == (0, 2)
