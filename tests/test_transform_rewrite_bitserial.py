# SPDX-License-Identifier: Apache-2.0
"""RewriteBitserial: Before/Expected structure, and the layers it must leave alone.

One Expected is written out whole (a W1A1 dense layer: its kernel, packed weights and
constants). The conv cases build their Expected kernels with topi (``plan_layer`` and
``layer_compute``, checked bit for bit against numpy by test_topi_layer.py): what they check
is the pass's matching and wiring, for layers too large to write out.
"""

import functools
import logging

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

import tvm_qnn
from tvm_qnn.topi.attrs import KERNEL_ATTR
from tvm_qnn.topi.layer import QuantizedLayer, plan_layer
from tvm_qnn.topi.layer_kernels import layer_compute
from tvm_qnn.topi.layout import Layout
from tvm_qnn.topi.requantize import Requantize
from tvm_qnn.transform import RewriteBitserial

RNG = np.random.default_rng(7)
W = RNG.integers(-2, 2, size=(16, 8, 3, 3)).astype("int8")
SW = np.full(16, 0.0625, "float32")
ZW = np.zeros(16, "int8")
BIAS = (RNG.integers(-8, 8, size=(1, 16, 1, 1)) * 0.0078125).astype("float32")


def _expected_conv(layer: QuantizedLayer, clip_input: bool):
    """The module the rewrite must produce: one call_tir of the layer's bit-serial compute."""
    plan = plan_layer(layer)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(layer.input_shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            data = bb.emit(relax.op.clip(x, 0, 3), name_hint="xc") if clip_input else x
            params = [relax.const(a) for _, a in plan.epilogue.tensor_params()]
            y = bb.call_te(
                functools.partial(layer_compute, plan), data, relax.const(plan.packed_weight),
                *params, primfunc_name_hint="bitserial_conv2d",
                primfunc_attrs={KERNEL_ATTR: "conv2d", "op_pattern": 8, "tvm_qnn.layer": "c",
                                "tvm_qnn.bits": f"W{plan.weight_bits}A{layer.act_bits}"})
            out = bb.emit_output(y, name_hint="y")
        bb.emit_func_output(out)
    return bb.get()


def _layer(bias=None, channels=16, **kw):
    """The 2-bit conv of the tests below: ReLU, 2-bit output codes."""
    output = Requantize(BIAS.reshape(-1) if bias is None else bias, clamp_lo=0.0, out_dtype="uint8",
                        out_scale=np.full(channels, 0.25, "float32"),
                        out_zero_point=np.zeros(channels, "int32"), qmin=0, qmax=3)
    base = dict(kind="conv2d", name="c", input_shape=(1, 8, 6, 6), weight=W.astype(np.int64),
                weight_scale=SW, weight_zero_point=ZW.astype(np.int64), act_scale=0.125,
                act_zero_point=0, act_lo=0, act_bits=2, input_dtype="uint8", output=output,
                pads=(1, 1, 1, 1))
    base.update(kw)
    return QuantizedLayer(**base)


def test_qcdq_conv_chain_becomes_one_bitserial_call():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "uint8")):
            with R.dataflow():
                xc = R.clip(x, 0, 3)
                xd = R.dequantize(xc, R.const(0.125, "float32"), R.const(0, "uint8"), axis=1)
                wd = R.dequantize(R.const(W), R.const(SW), R.const(ZW), axis=0)
                c = R.nn.conv2d(xd, wd, padding=[1, 1, 1, 1])
                b = R.add(c, R.const(BIAS))
                r = R.nn.relu(b)
                q = R.quantize(r, R.const(0.25, "float32"), R.const(0, "uint8"), axis=1,
                               out_dtype="uint8")
                y = R.clip(q, 0, 3)
                R.output(y)
            return y

    after = RewriteBitserial()(Before)
    tvm.ir.assert_structural_equal(after, _expected_conv(_layer(), clip_input=True))


# A W1A1 dense layer, small enough to write its kernel out: 64 one-bit codes, 16 bipolar
# weight rows, float output. Its packed weights and accumulator constants are derived here from
# the math (DESIGN.md §1), not by the code under test: one uint64 word per output channel whose
# bit k is set where W[oc, k] = +1, and 2·acc = 2·Uw - 2·P with Uw the +1 count of each row.
W1 = np.where(np.random.default_rng(3).random((16, 64)) < 0.5, -1, 1).astype("int8")
W1_WORDS = np.packbits(W1 == 1, axis=1, bitorder="little").view("<u8").reshape(1, 1, 1, 16)
W1_CONST2 = (2 * (W1 == 1).sum(axis=1)).astype("int32")


def test_w1a1_dense_becomes_the_kernel_written_out():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 64), "uint8")):
            with R.dataflow():
                xc = R.clip(x, 0, 1)
                xd = R.dequantize(xc, R.const(0.5, "float32"), R.const(0, "uint8"), axis=1)
                wd = R.dequantize(R.const(W1), R.const(0.25, "float32"), R.const(0, "int8"),
                                  axis=0)
                wt = R.permute_dims(wd)
                y = R.matmul(xd, wt)
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @T.prim_func(private=True, s_tir=True)
        def bitserial_dense(xc: T.Buffer((T.int64(1), T.int64(64)), "uint8"),
                            B: T.Buffer((T.int64(1), T.int64(1), T.int64(1), T.int64(16)),
                                        "uint64"),
                            C: T.Buffer((T.int64(16),), "int32"),
                            epilogue: T.Buffer((T.int64(1), T.int64(16)), "float32")):
            T.func_attr({"op_pattern": 8, "tirx.noalias": True, "tvm_qnn.bits": "W1A1",
                         "tvm_qnn.kernel": "dense", "tvm_qnn.layer": "y"})
            bitpack = T.sblock_alloc_buffer((T.int64(1), T.int64(1), T.int64(1)), "uint64")
            branch_popcount = T.sblock_alloc_buffer((T.int64(1), T.int64(1), T.int64(16)),
                                                    "uint64")
            # One activation plane, packed 64 codes to a word.
            for r, i, word, b in T.grid(T.int64(1), T.int64(1), T.int64(1), T.int64(64)):
                with T.sblock("bitpack"):
                    v_r, v_i, v_word, v_b = T.axis.remap("SSSR", [r, i, word, b])
                    T.reads(xc[v_r, T.min(v_word * T.int64(64) + v_b, T.int64(63))])
                    T.writes(bitpack[v_r, v_i, v_word])
                    with T.init():
                        bitpack[v_r, v_i, v_word] = T.uint64(0)
                    bitpack[v_r, v_i, v_word] = bitpack[v_r, v_i, v_word] + (T.Cast(
                        "uint64", T.Cast("int64", T.Cast(
                            "int32", xc[v_r, T.min(v_word * T.int64(64) + v_b, T.int64(63))]))
                        >> v_i & T.int64(1)) << T.Cast("uint64", v_b))
            # The one branch: P = popcount(A xor W), 16 channels in one weight vector.
            for i0, i1, i2, i, j, rw in T.grid(T.int64(1), T.int64(1), T.int64(16), T.int64(1),
                                               T.int64(1), T.int64(1)):
                with T.sblock("branch_popcount"):
                    v_i0, v_i1, v_i2, v_i, v_j, v_rw = T.axis.remap("SSSRRR",
                                                                    [i0, i1, i2, i, j, rw])
                    T.reads(bitpack[v_i0, v_i, v_rw], B[v_i1, v_j, v_rw, v_i2])
                    T.writes(branch_popcount[v_i0, v_i1, v_i2])
                    with T.init():
                        branch_popcount[v_i0, v_i1, v_i2] = T.uint64(0)
                    branch_popcount[v_i0, v_i1, v_i2] = branch_popcount[v_i0, v_i1, v_i2] + (
                        T.popcount(bitpack[v_i0, v_i, v_rw] ^ B[v_i1, v_j, v_rw, v_i2])
                        << T.Cast("uint64", v_i + v_j))
            # acc = (2 Uw - 2 P) >> 1, then scale 0.5 * 0.25 (fenced: no FMA contraction).
            for r, oc in T.grid(T.int64(1), T.int64(16)):
                with T.sblock("epilogue"):
                    v_r, v_oc = T.axis.remap("SS", [r, oc])
                    T.reads(C[v_oc], branch_popcount[v_r, v_oc // T.int64(16),
                                                     v_oc % T.int64(16)])
                    T.writes(epilogue[v_r, v_oc])
                    epilogue[v_r, v_oc] = T.call_llvm_pure_intrin(
                        "float32", "llvm.arithmetic.fence", T.Cast(
                            "float32", C[v_oc] - T.Cast("int32", branch_popcount[
                                v_r, v_oc // T.int64(16), v_oc % T.int64(16)]) * 2 >> 1)
                        * T.float32(0.125))

        @R.function
        def main(x: R.Tensor((1, 64), "uint8")) -> R.Tensor((1, 16), "float32"):
            cls = Expected
            with R.dataflow():
                xc = R.clip(x, 0, 1)
                y = R.call_tir(cls.bitserial_dense, (xc, R.const(W1_WORDS), R.const(W1_CONST2)),
                               out_ty=R.Tensor((1, 16), "float32"))
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(RewriteBitserial()(Before), Expected)


def test_uint8_input_without_clip_is_eight_bit():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "uint8")):
            with R.dataflow():
                xd = R.dequantize(x, R.const(0.125, "float32"), R.const(0, "uint8"), axis=1)
                wd = R.dequantize(R.const(W), R.const(SW), R.const(ZW), axis=0)
                c = R.nn.conv2d(xd, wd, padding=[1, 1, 1, 1])
                b = R.add(c, R.const(BIAS))
                r = R.nn.relu(b)
                q = R.quantize(r, R.const(0.25, "float32"), R.const(0, "uint8"), axis=1,
                               out_dtype="uint8")
                y = R.clip(q, 0, 3)
                R.output(y)
            return y

    after = RewriteBitserial()(Before)
    tvm.ir.assert_structural_equal(after, _expected_conv(_layer(act_bits=8),
                                                         clip_input=False))


def test_activation_per_channel_scale_is_left_as_is(caplog):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "uint8")):
            with R.dataflow():
                xd = R.dequantize(x, R.const(np.linspace(0.1, 0.2, 8, dtype="float32")),
                                  R.const(np.zeros(8, "uint8")), axis=1)
                wd = R.dequantize(R.const(W), R.const(SW), R.const(ZW), axis=0)
                c = R.nn.conv2d(xd, wd, padding=[1, 1, 1, 1])
                R.output(c)
            return c

    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        after = RewriteBitserial()(Before)
    tvm.ir.assert_structural_equal(after, Before)
    # Scales that vary over the channels a conv reduces cannot leave the codes.
    assert "activation scale varies within a conv group" in caplog.text


def test_nine_bit_activations_are_left_as_is(caplog):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "int16")):
            with R.dataflow():
                xc = R.clip(x, 0, 511)
                xd = R.dequantize(xc, R.const(0.125, "float32"), R.const(0, "int16"), axis=1)
                wd = R.dequantize(R.const(W), R.const(SW), R.const(ZW), axis=0)
                c = R.nn.conv2d(xd, wd, padding=[1, 1, 1, 1])
                R.output(c)
            return c

    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        after = RewriteBitserial()(Before)
    tvm.ir.assert_structural_equal(after, Before)
    assert "activations use 9 bits (1..8 supported)" in caplog.text


def test_float_conv_is_not_touched():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "float32")):
            with R.dataflow():
                c = R.nn.conv2d(x, R.const(W.astype("float32")), padding=[1, 1, 1, 1])
                R.output(c)
            return c

    tvm.ir.assert_structural_equal(RewriteBitserial()(Before), Before)


def test_integer_spelling_with_requantize_is_rewritten():
    # QLinearConv as the frontend spells it: int32 conv of shifted codes, + B, * m, quantize.
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 6, 6), "uint8")):
            with R.dataflow():
                xs = R.subtract(R.astype(x, "int32"), R.const(3, "int32"))
                ws = R.subtract(R.astype(R.const(W), "int32"), R.const(0, "int32"))
                c = R.nn.conv2d(xs, ws, padding=[1, 1, 1, 1], out_dtype="int32")
                b = R.add(c, R.const(np.arange(16, dtype="int32").reshape(1, 16, 1, 1)))
                f = R.astype(b, "float32")
                m = R.multiply(f, R.const(np.float32(0.01)))
                q = R.quantize(m, R.const(1.0, "float32"), R.const(128, "uint8"), axis=1,
                               out_dtype="uint8")
                R.output(q)
            return q

    after = RewriteBitserial()(Before)
    calls = [b.value for blk in after["main"].body.blocks for b in blk.bindings]
    assert len(calls) == 1 and calls[0].op.name == "relax.call_tir"
    prim = after[calls[0].args[0]]
    assert prim.attrs[KERNEL_ATTR] == "conv2d" and prim.attrs["tvm_qnn.bits"] == "W2A8"


W2 = RNG.integers(-2, 2, size=(8, 16, 3, 3)).astype("int8")
SW2 = np.full(8, 0.125, "float32")


def _two_conv_module(return_middle: bool, pool: bool = False, concat: bool = False,
                     readers: int = 1, residual: bool = False):
    """conv(8→16) → clip to 2 bits [→ 2x2 max pool] [→ concat with a second conv(8→16) of
    x] → conv(16 or 32→8) (``readers`` of them): the first layer's codes feed the second."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "uint8"))

    def conv(data, w, sw, name):
        xd = bb.emit(relax.op.dequantize(data, relax.const(0.125, "float32"),
                                         relax.const(0, "uint8"), axis=1))
        wd = bb.emit(relax.op.dequantize(relax.const(w), relax.const(sw),
                                         relax.const(np.zeros(w.shape[0], "int8")), axis=0))
        c = bb.emit(relax.op.nn.conv2d(xd, wd, padding=[1, 1, 1, 1]), name_hint=name)
        r = bb.emit(relax.op.nn.relu(c))
        q = bb.emit(relax.op.quantize(r, relax.const(0.25, "float32"), relax.const(0, "uint8"),
                                      axis=1, out_dtype="uint8"))
        return bb.emit(relax.op.clip(q, 0, 3))

    with bb.function("main", [x]):
        with bb.dataflow():
            xc = bb.emit(relax.op.clip(x, 0, 3))
            mid = conv(xc, W, SW, "c1")
            if concat:
                mid = bb.emit(relax.op.concat([mid, conv(xc, W, SW, "c1b")], axis=1))
            if residual:  # ResNet's block end: requantize the sum of two dequantized codes
                s = relax.const(0.25, "float32")
                deq = [bb.emit(relax.op.dequantize(t, s, relax.const(0, "uint8")))
                       for t in (mid, conv(xc, W, SW, "c1b"))]
                total = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(*deq))))
                mid = bb.emit(relax.op.clip(bb.emit(relax.op.quantize(
                    total, relax.const(0.5, "float32"), relax.const(0, "uint8"),
                    out_dtype="uint8")), 0, 3))
            if pool:
                mid = bb.emit(relax.op.nn.max_pool2d(mid, [2, 2], [2, 2]))
            w2 = np.concatenate([W2, W2], axis=1) if concat else W2
            ys = [conv(mid, w2, SW2, "c2" if k == 0 else f"c2_{k}") for k in range(readers)]
            out = bb.emit_output(relax.Tuple([*ys, mid]) if return_middle else
                                 ys[0] if readers == 1 else relax.Tuple(ys))
        bb.emit_func_output(out)
    return bb.get()


def _chain_layers(layout=Layout()):
    first = _layer(name="c1", bias=np.zeros(16, "float32"))
    second = _layer(name="c2", input_shape=(1, 16, 6, 6), weight=W2.astype(np.int64),
                    weight_scale=SW2, weight_zero_point=np.zeros(8, np.int64),
                    bias=np.zeros(8, "float32"), channels=8)
    return plan_layer(first, layout), plan_layer(second, layout)


def _layer_call(bb, plan, data, name, **modes):
    params = [relax.const(a) for _, a in plan.epilogue.tensor_params()]
    return bb.call_te(
        functools.partial(layer_compute, plan, **modes), data,
        relax.const(plan.packed_weight), *params, primfunc_name_hint="bitserial_conv2d",
        primfunc_attrs={KERNEL_ATTR: "conv2d", "op_pattern": 8, "tvm_qnn.layer": name,
                        "tvm_qnn.bits": "W2A2"})


def test_conv_feeding_conv_passes_channels_last_bit_planes():
    from tvm_qnn.topi.layer_kernels import packed_input_shape
    from tvm_qnn.topi.pack_channels_last import pack_channels_last_func

    after = RewriteBitserial()(_two_conv_module(return_middle=False))
    first, second = _chain_layers()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "uint8"))
    call = functools.partial(_layer_call, bb)

    with bb.function("main", [x]):
        with bb.dataflow():
            xc = bb.emit(relax.op.clip(x, 0, 3))
            mid = bb.emit(call(first, xc, "c1", packed_input=False, channels_last_output=True))
            pack = bb.add_func(pack_channels_last_func((1, 6, 6, 16), "uint8", 0, 2,
                                                       (1, 1, 1, 1), 0, 64, parallel=False),
                               "pack_channels_last")
            planes = bb.emit(relax.call_tir(pack, [mid], relax.TensorType(
                packed_input_shape(second), "uint64")))
            y = bb.emit(call(second, planes, "c2", packed_input=True,
                             channels_last_output=False))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get(), map_free_vars=True)


def test_int8_dot_conv_feeding_int8_dot_conv_reads_its_nhwc_codes_as_they_are():
    """Expected: the first writes NHWC codes, the second reads them with no pack between."""
    layout = Layout(dot8_min_branches=1)
    after = RewriteBitserial(layout)(_two_conv_module(return_middle=False))
    first, second = _chain_layers(layout)
    assert first.kernel == second.kernel == "int8-dot"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            xc = bb.emit(relax.op.clip(x, 0, 3))
            mid = bb.emit(_layer_call(bb, first, xc, "c1", channels_last_output=True))
            y = bb.emit(_layer_call(bb, second, mid, "c2", channels_last_input=True))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(after, bb.get(), map_free_vars=True)


def test_a_max_pool_between_convs_pools_the_channels_last_codes():
    after = RewriteBitserial()(_two_conv_module(return_middle=False, pool=True))
    bindings = [b for blk in after["main"].body.blocks for b in blk.bindings]
    calls = [b.value for b in bindings if isinstance(b.value, relax.Call)]
    callees = [c.args[0].name_hint if c.op.name == "relax.call_tir" else c.op.name
               for c in calls]
    assert callees[1:] == ["bitserial_conv2d", "relax.nn.max_pool2d", "pack_channels_last",
                           "bitserial_conv2d1"]
    pool = calls[2]
    assert pool.args[0].same_as(bindings[1].var)  # the first conv's channels-last codes
    assert str(pool.attrs.layout) == "NHWC" and list(pool.ty.shape) == [1, 3, 3, 16]


def _callees(func):
    calls = [b.value for blk in func.body.blocks for b in blk.bindings
             if isinstance(b.value, relax.Call)]
    return calls, [c.args[0].name_hint if c.op.name == "relax.call_tir" else c.op.name
                   for c in calls]


def test_a_concat_of_two_convs_concatenates_their_channels_last_codes():
    after = RewriteBitserial()(_two_conv_module(return_middle=False, concat=True, pool=True))
    calls, callees = _callees(after["main"])
    assert callees[1:] == ["bitserial_conv2d", "bitserial_conv2d1", "relax.concat",
                           "relax.nn.max_pool2d", "pack_channels_last", "bitserial_conv2d2"]
    concat = calls[3]
    assert int(concat.attrs.axis) == 3 and list(concat.ty.shape) == [1, 6, 6, 32]
    assert list(calls[4].ty.shape) == [1, 3, 3, 32]


def test_a_residual_sum_of_two_convs_is_requantized_channels_last():
    after = RewriteBitserial()(_two_conv_module(return_middle=False, residual=True))
    calls, callees = _callees(after["main"])
    assert callees[1:] == ["bitserial_conv2d", "bitserial_conv2d1", "relax.dequantize",
                           "relax.dequantize", "relax.add", "relax.nn.relu", "relax.quantize",
                           "relax.clip", "pack_channels_last", "bitserial_conv2d2"]
    assert all(list(c.ty.shape) == [1, 6, 6, 16] for c in calls[3:9])


def test_codes_read_by_two_convs_go_channels_last_to_both():
    after = RewriteBitserial()(_two_conv_module(return_middle=False, readers=2))
    _, callees = _callees(after["main"])
    assert callees[1:] == ["bitserial_conv2d", "pack_channels_last", "bitserial_conv2d1",
                           "pack_channels_last", "bitserial_conv2d2"]


def test_a_concat_that_is_also_returned_stays_nchw():
    after = RewriteBitserial()(_two_conv_module(return_middle=True, concat=True))
    calls, callees = _callees(after["main"])
    assert "pack_channels_last" not in callees
    concat = calls[callees.index("relax.concat")]
    assert int(concat.attrs.axis) == 1 and list(concat.ty.shape) == [1, 32, 6, 6]


def _two_dense_module(rows: int):
    """dense(64→32) → 2-bit codes → dense(32→16), ``rows`` rows."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, 64), "uint8"))

    def dense(data, w):
        xd = bb.emit(relax.op.dequantize(data, relax.const(0.125, "float32"),
                                         relax.const(0, "uint8"), axis=1))
        wd = bb.emit(relax.op.dequantize(relax.const(w), relax.const(0.25, "float32"),
                                         relax.const(0, "int8"), axis=0))
        return bb.emit(relax.op.matmul(xd, bb.emit(relax.op.permute_dims(wd))))

    with bb.function("main", [x]):
        with bb.dataflow():
            mid = dense(bb.emit(relax.op.clip(x, 0, 3)),
                        RNG.integers(-2, 2, (32, 64)).astype("int8"))
            q = bb.emit(relax.op.quantize(bb.emit(relax.op.nn.relu(mid)),
                                          relax.const(0.5, "float32"),
                                          relax.const(0, "uint8"), axis=1, out_dtype="uint8"))
            y = dense(bb.emit(relax.op.clip(q, 0, 3)),
                      RNG.integers(-2, 2, (16, 32)).astype("int8"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_a_batched_dense_layer_takes_bit_planes_from_the_dense_before_it():
    _, callees = _callees(RewriteBitserial()(_two_dense_module(rows=8))["main"])
    assert callees[1:] == ["bitserial_dense", "relax.reshape", "pack_channels_last",
                           "relax.reshape", "bitserial_dense1"]
    _, callees = _callees(RewriteBitserial()(_two_dense_module(rows=1))["main"])
    assert callees[1:] == ["bitserial_dense", "bitserial_dense1"]  # packs its own row


def _conv_flatten_dense_module(rows: int):
    """conv(8→16, 3x3 → 1x1 images) → 2-bit codes → flatten → dense(16→4), ``rows`` rows."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, 8, 3, 3), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            xd = bb.emit(relax.op.dequantize(bb.emit(relax.op.clip(x, 0, 3)),
                                             relax.const(0.125, "float32"),
                                             relax.const(0, "uint8"), axis=1))
            wd = bb.emit(relax.op.dequantize(relax.const(W), relax.const(0.25, "float32"),
                                             relax.const(0, "int8"), axis=0))
            c = bb.emit(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(xd, wd))))
            q = bb.emit(relax.op.clip(bb.emit(relax.op.quantize(
                c, relax.const(0.5, "float32"), relax.const(0, "uint8"), axis=1,
                out_dtype="uint8")), 0, 3))
            flat = bb.emit(relax.op.reshape(q, (rows, 16)))
            fd = bb.emit(relax.op.dequantize(flat, relax.const(0.5, "float32"),
                                             relax.const(0, "uint8"), axis=1))
            w2 = relax.const(RNG.integers(-2, 2, (4, 16)).astype("int8"))
            w2d = bb.emit(relax.op.dequantize(w2, relax.const(0.25, "float32"),
                                              relax.const(0, "int8"), axis=0))
            y = bb.emit(relax.op.matmul(fd, bb.emit(relax.op.permute_dims(w2d))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_a_batched_dense_takes_bit_planes_from_a_flattened_conv_of_1x1_images():
    before = _conv_flatten_dense_module(rows=8)
    _, callees = _callees(RewriteBitserial()(before)["main"])
    assert callees[1:] == ["bitserial_conv2d", "relax.reshape", "relax.reshape",
                           "pack_channels_last", "relax.reshape", "bitserial_dense"]
    # The same numbers as TVM's float graph (powers of two: exact).
    x = RNG.integers(0, 4, size=(8, 8, 3, 3)).astype("uint8")
    want = relax.VirtualMachine(tvm.compile(before, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(tvm_qnn.compile(before, target="x86").run(x), want)


def _mixed_concat_module():
    """Two convs of x, one writing uint8 codes [0, 3], one int8 codes [-2, 1], cast to int16
    and concatenated (as ConcatQuantizedCodes joins them), then a conv of the concat."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "uint8"))

    def conv(data, w, zero, out_dtype, lo, hi):
        xd = bb.emit(relax.op.dequantize(data, relax.const(0.125, "float32"), zero, axis=1))
        wd = bb.emit(relax.op.dequantize(relax.const(w), relax.const(0.0625, "float32"),
                                         relax.const(0, "int8"), axis=0))
        c = bb.emit(relax.op.nn.conv2d(xd, wd, padding=[1, 1, 1, 1]))
        if out_dtype is None:
            return c
        q = bb.emit(relax.op.quantize(c, relax.const(0.25, "float32"),
                                      relax.const(0, out_dtype), axis=1, out_dtype=out_dtype))
        return bb.emit(relax.op.astype(bb.emit(relax.op.clip(q, lo, hi)), "int16"))

    with bb.function("main", [x]):
        with bb.dataflow():
            xc = bb.emit(relax.op.clip(x, 0, 3))
            parts = [conv(xc, W, relax.const(0, "uint8"), dtype, lo, hi)
                     for dtype, lo, hi in (("uint8", 0, 3), ("int8", -2, 1))]
            cat = bb.emit(relax.op.concat(parts, axis=1))
            w2 = np.concatenate([W2, W2], axis=1)
            out = bb.emit_output(conv(cat, w2, relax.const(0, "int16"), None, 0, 0))
        bb.emit_func_output(out)
    return bb.get()


def test_codes_cast_to_one_type_for_a_concat_stay_channels_last_and_exact(caplog):
    """The casts to int16 run on the NHWC codes, and an int8-dot reader reads the int16
    concat as it is (x86:haswell: every conv of this module takes the int8-dot kernel)."""
    before = _mixed_concat_module()
    x = RNG.integers(0, 4, size=(1, 8, 6, 6)).astype("uint8")
    want = relax.VirtualMachine(tvm.compile(before, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    with caplog.at_level(logging.INFO, logger="tvm_qnn.rewrite"):
        art = tvm_qnn.compile(before, target="x86:haswell")
    assert [r["kernel"] for r in art.layers] == ["int8-dot"] * 3
    assert caplog.text.count("reads its input codes channels-last") == 1, caplog.text
    np.testing.assert_array_equal(art.run(x), want)


def test_codes_used_elsewhere_are_not_passed_as_bit_planes():
    after = RewriteBitserial()(_two_conv_module(return_middle=True))
    names = [gv.name_hint for gv in after.get_global_vars()]
    assert "pack_channels_last" not in names
    assert sum(n.startswith("bitserial_conv2d") for n in names) == 2
