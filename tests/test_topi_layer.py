# SPDX-License-Identifier: Apache-2.0
"""Every bit-serial layer equals the numpy integer reference, bit for bit."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tvm import s_tir, tirx

from tvm_qnn.target import resolve_target
from tvm_qnn.target.cpu import ScheduleConfig
from tvm_qnn.target.x86 import X86Target
from tvm_qnn.testing.layers import LayerKernel, random_layer
from tvm_qnn.topi.attrs import BRANCH_BLOCK, CHUNK_BLOCK, EPILOGUE_BLOCK
from tvm_qnn.topi.layer import plan_layer, reference_output
from tvm_qnn.topi.layout import Layout
from tvm_qnn.topi.weights import decompose_weights

# The NEON layout (byte words, uint8 chunk sums, 64-channel weight vectors) is plain TIR, so
# it runs here on x86 too: every layout is checked on the host, ARM code under qemu.
LAYOUTS = {
    "words64": lambda: X86Target(),
    "bytes": lambda: X86Target(schedule_config=ScheduleConfig(ow_tile=2),
                               layout=Layout(oc_block=64, word_bits=8)),
    # Register tiles of several weight vectors and rows, the reduction unrolled, the input
    # packed as column vectors.
    "wide_tile": lambda: X86Target(
        schedule_config=ScheduleConfig(ow_tile=3, oh_tile=2, row_tile=2, oc_vectors=2,
                                       unroll_max_step=64, vector_pack=True),
        layout=Layout(oc_block=8)),
}


def _check(layer, xq, layout="words64"):
    kernel = LayerKernel(layer, target=LAYOUTS[layout]())
    out = kernel(xq)
    ref = reference_output(layer, xq)
    np.testing.assert_array_equal(out, ref)
    return ref


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("kind,in_channels", [("conv2d", 70), ("conv2d", 3), ("dense", 70)])
def test_w_a_bits_exact(kind, in_channels, bits, layout):
    layer, xq = random_layer(kind, act_bits=bits, weight_bits=bits, in_channels=in_channels,
                             out_channels=32, size=(9, 9), seed=bits)
    ref = _check(layer, xq, layout)
    assert len(np.unique(ref)) > 2, "degenerate test: the output codes barely vary"


@pytest.mark.parametrize("kind,in_channels,bits,chunk,acc", [
    ("conv2d", 296, 1, 1, "uint16"),  # 37 byte words: a prime, so chunks of one word
    ("conv2d", 512, 4, 16, "uint32"),  # 225 * 4608 > 2^16: 32-bit accumulators
    ("dense", 4096, 2, 16, "uint16"),
    ("dense", 200, 8, 25, "uint32"),
])
def test_byte_word_chunks_and_accumulators(kind, in_channels, bits, chunk, acc):
    layer, xq = random_layer(kind, act_bits=bits, weight_bits=bits, in_channels=in_channels,
                             out_channels=64, size=(3, 3), batch=2, seed=in_channels)
    kernel = LayerKernel(layer, target=LAYOUTS["bytes"]())
    sch = s_tir.Schedule(kernel.func)  # the scheduled func: reductions split into init/update
    chunk_block = sch.get(sch.get_sblock(CHUNK_BLOCK + "_update"))
    red = {iv.var.name: int(iv.dom.extent) for iv in chunk_block.iter_vars
           if iv.iter_type == tirx.IterVar.CommReduce}
    assert red == {"v_rwi": chunk}
    branch = sch.get(sch.get_sblock(BRANCH_BLOCK + "_update"))
    assert str(branch.writes[0].source.dtype) == acc
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@pytest.mark.parametrize("act_bits,weight_bits", [(8, 8), (1, 2), (2, 1), (5, 3)])
def test_mixed_and_eight_bit(act_bits, weight_bits):
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                             in_channels=20, out_channels=8, size=(6, 5), act_signed=True)
    _check(layer, xq)


@pytest.mark.parametrize("in_channels,bits,layout", [(1, 8, "im2col"), (3, 4, "im2col"),
                                                     (3, 2, "channels"), (64, 8, "channels")])
def test_both_conv_packings_exact(in_channels, bits, layout):
    layer, xq = random_layer("conv2d", act_bits=bits, weight_bits=bits, in_channels=in_channels,
                             out_channels=16, size=(10, 9), strides=(2, 1), pads=(1, 0, 2, 1))
    assert plan_layer(layer).conv_layout == layout
    _check(layer, xq)


def test_float_output_and_arbitrary_scales():
    layer, xq = random_layer("conv2d", out_quant=False, relu=False, pow2_scales=False,
                             act_bits=3, weight_bits=2)
    assert layer.output.out_dtype == "float32"
    _check(layer, xq)


@settings(max_examples=examples(40))
@given(
    act_bits=st.integers(1, 8), weight_bits=st.integers(1, 8),
    act_signed=st.booleans(), weight_signed=st.booleans(), per_channel=st.booleans(),
    groups_mult=st.sampled_from([(1, 1), (2, 1), (4, 4), (3, 2)]),
    cg=st.integers(1, 70), size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4), dilation=st.tuples(st.integers(1, 2),
                                                                  st.integers(1, 2)),
    weight_zero_point=st.integers(-3, 3), relu=st.booleans(), out_quant=st.booleans(),
    out_bits=st.sampled_from([None, 1, 2, 4]), pow2=st.booleans(), seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_conv2d_property(act_bits, weight_bits, act_signed, weight_signed, per_channel,
                         groups_mult, cg, size, kernel, strides, pads, dilation,
                         weight_zero_point, relu, out_quant, out_bits, pow2, seed, layout):
    groups, mult = groups_mult
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    assume(size[0] + pads[0] + pads[2] >= eff[0] and size[1] + pads[1] + pads[3] >= eff[1])
    layer, xq = random_layer(
        "conv2d", act_bits=act_bits, weight_bits=weight_bits, in_channels=cg * groups,
        out_channels=groups * mult, size=size, kernel=kernel, strides=strides, pads=pads,
        dilation=dilation, groups=groups, act_signed=act_signed, weight_signed=weight_signed,
        per_channel=per_channel, weight_zero_point=weight_zero_point, relu=relu,
        out_quant=out_quant, pow2_scales=pow2, out_bits=out_bits, seed=seed)
    _check(layer, xq, layout)


@settings(max_examples=examples(25))
@given(act_bits=st.integers(1, 8), weight_bits=st.integers(1, 8), batch=st.integers(1, 5),
       k=st.integers(1, 200), oc=st.integers(1, 40), act_signed=st.booleans(),
       weight_signed=st.booleans(), act_zero_point=st.integers(-5, 5), relu=st.booleans(),
       out_bits=st.sampled_from([None, 1, 3]), pow2=st.booleans(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_dense_property(act_bits, weight_bits, batch, k, oc, act_signed, weight_signed,
                        act_zero_point, relu, out_bits, pow2, seed, layout):
    layer, xq = random_layer("dense", act_bits=act_bits, weight_bits=weight_bits, batch=batch,
                             in_channels=k, out_channels=oc, act_signed=act_signed,
                             weight_signed=weight_signed, act_zero_point=act_zero_point,
                             relu=relu, pow2_scales=pow2, out_bits=out_bits, seed=seed)
    _check(layer, xq, layout)


def test_bipolar_weights_are_one_plane_and_skip_the_activation_sum():
    # int8 codes in {-1, +1}: one bipolar plane, symmetric around zero-point 0.
    layer, xq = random_layer("conv2d", act_bits=2, weight_bits=1, weight_signed=True)
    plan = plan_layer(layer)
    assert plan.weight_bits == 1 and plan.branches == 2
    assert not plan.epilogue.needs_rowsum
    _check(layer, xq)


@pytest.mark.parametrize("layout", ["words64", "bytes"])
@pytest.mark.parametrize("kind,bits,lo,zero_point,pads", [
    ("conv2d", 1, -1, 0, (0, 0, 0, 0)),  # QONNX bipolar {-1, +1}: z'_x is a half
    ("dense", 1, -1, 0, (0, 0, 0, 0)),
    ("conv2d", 2, -3, 0, (0, 0, 0, 0)),  # the paper's odd 2-bit codes {-3, -1, 1, 3}
    ("conv2d", 2, -4, 0, (1, 1, 1, 1)),  # even codes {-4, -2, 0, 2}: padding has a code
])
def test_codes_two_apart_are_packed_as_their_planes(kind, bits, lo, zero_point, pads, layout):
    base, xq = random_layer(kind, act_bits=bits, weight_bits=2, in_channels=40,
                            out_channels=16, size=(6, 6), pads=pads, seed=bits,
                            out_quant=False, relu=False)
    u = xq.astype(np.int64) - base.act_lo
    layer = replace(base, act_step=2, act_lo=lo, act_zero_point=zero_point, input_dtype="int8")
    assert plan_layer(layer).branches == bits * 2
    ref = _check(layer, (lo + 2 * u).astype(np.int8), layout)
    assert len(np.unique(ref)) > 1, "degenerate test: one output code"


def test_weight_planes_come_from_the_values_used():
    q = np.array([[-6, -2, 2, 6], [0, 0, 0, 0], [5, 7, 9, 5]])
    planes = decompose_weights(q)
    assert planes.bits == 2  # steps of 4 → {0..3}; steps of 2 → {0..2}; constant → 0
    np.testing.assert_array_equal(planes.lo, [-6, 0, 5])
    np.testing.assert_array_equal(planes.step, [4, 1, 2])
    np.testing.assert_array_equal(planes.lo[:, None] + planes.step[:, None] * planes.codes, q)


@pytest.mark.parametrize("max_thresholds", [0, 15])
def test_threshold_and_float_epilogues_agree(max_thresholds):
    """The same 2-bit-output layer through both epilogues: both equal the reference."""
    layer, xq = random_layer("conv2d", act_bits=2, weight_bits=2, in_channels=24,
                             out_channels=20, pow2_scales=False, out_bits=2, seed=3)
    kernel = LayerKernel(layer, max_thresholds=max_thresholds)
    assert (kernel.plan.epilogue.thresholds is not None) == (max_thresholds > 0)
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@settings(max_examples=examples(6))
@given(act_bits=st.integers(1, 4), weight_bits=st.integers(1, 4), act_signed=st.booleans(),
       cin=st.integers(1, 140), cout=st.integers(1, 40),
       size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4), out_bits=st.sampled_from([None, 1, 2]),
       act_zero_point=st.integers(-2, 2), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_chained_conv_property(act_bits, weight_bits, act_signed, cin, cout, size, strides,
                               pads, out_bits, act_zero_point, seed, layout):
    """A conv fed channels-last codes through the vector pack (as between two bit-serial
    convs), writing channels-last codes: equal to the reference, padding included."""
    from tvm_qnn.testing.layers import ChainedLayerKernel
    from tvm_qnn.topi.layer_kernels import chains_channels_last

    assume(size[0] + pads[0] + pads[2] >= 3 and size[1] + pads[1] + pads[3] >= 3)
    lo = -(1 << (act_bits - 1)) if act_signed else 0
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                             in_channels=cin, out_channels=cout, size=size, strides=strides,
                             pads=pads, act_signed=act_signed, out_bits=out_bits,
                             act_zero_point=lo + abs(act_zero_point) % (1 << act_bits),
                             seed=seed)
    target = LAYOUTS[layout]()
    assume(chains_channels_last(plan_layer(layer, target.layout)))
    kernel = ChainedLayerKernel(layer, target=target)
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@settings(max_examples=examples(25))
@given(act_bits=st.integers(4, 8), weight_bits=st.integers(4, 8), act_signed=st.booleans(),
       groups_mult=st.sampled_from([(1, 1), (2, 3)]), cg=st.integers(1, 9),
       size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4), dilation=st.tuples(st.integers(1, 2),
                                                                     st.integers(1, 2)),
       weight_zero_point=st.integers(-3, 3), out_quant=st.booleans(),
       out_bits=st.sampled_from([None, 2]), seed=st.integers(0, 2**16))
def test_integer_kernel_property(act_bits, weight_bits, act_signed, groups_mult, cg, size,
                                 strides, pads, dilation, weight_zero_point, out_quant,
                                 out_bits, seed):
    """Convs with many branches get the plain integer kernel: also bit-exact."""
    groups, mult = groups_mult
    assume(size[0] + pads[0] + pads[2] >= 1 + 2 * dilation[0]
           and size[1] + pads[1] + pads[3] >= 1 + 2 * dilation[1])
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                             in_channels=cg * groups, out_channels=groups * mult, size=size,
                             strides=strides, pads=pads, dilation=dilation, groups=groups,
                             act_signed=act_signed, weight_zero_point=weight_zero_point,
                             out_quant=out_quant, out_bits=out_bits, seed=seed)
    kernel = LayerKernel(layer, integer_min_branches=16)
    assert kernel.plan.conv_layout == "integer"
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


def test_single_branch_layers_get_their_own_register_tile():
    """W1A1 layers use the layout's single-branch weight vectors (and the config's tile),
    others oc_block; both bit-exact. The layout is set here, not the host's: the test holds
    on any x86 CPU."""
    target = X86Target(schedule_config=ScheduleConfig(single_branch_tile=(2, 2)),
                       layout=Layout(oc_block=16, single_branch_oc_block=32))
    for bits, block in ((1, 32), (2, 16)):
        layer, xq = random_layer("conv2d", act_bits=bits, weight_bits=bits, in_channels=64,
                                 out_channels=64, size=(6, 6), out_bits=bits, seed=bits)
        kernel = LayerKernel(layer, target=target)
        assert kernel.plan.oc_block == block
        np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@pytest.mark.parametrize("spec", ["x86:haswell", "x86:znver4"])
def test_a_dense_tile_spans_the_classs_weight_vectors(spec):
    """A one-row dense layer's register tile holds VPSHUFB_DENSE_OC_VECTORS weight vectors on
    the classes without VPOPCNTDQ (each broadcast activation word serves them all), one with
    it; exact either way. Compiled for the named CPU, run only where it runs here."""
    from tvm_qnn.target.x86 import VPSHUFB_DENSE_OC_VECTORS

    target = resolve_target(spec)
    layer, xq = random_layer("dense", act_bits=1, weight_bits=1, in_channels=256,
                             out_channels=256, batch=1, seed=5)
    kernel = LayerKernel(layer, target=target)
    sch = s_tir.Schedule(kernel.func)
    block = f"{CHUNK_BLOCK if target.layout.word_bits == 8 else BRANCH_BLOCK}_update"
    loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock(block))]
    unrolled = [int(loop.extent) for loop in loops if loop.kind == tirx.ForKind.UNROLLED]
    vectors = 1 if target.has_vpopcntdq else VPSHUFB_DENSE_OC_VECTORS
    assert max(unrolled) == vectors, unrolled
    if target.runs_here():
        np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@pytest.mark.parametrize("max_weight_bytes,rows_first", [(1 << 20, True), (1024, False)])
def test_a_parallel_conv_splits_its_rows_unless_its_weights_are_big(max_weight_bytes,
                                                                    rows_first):
    """The cores of a parallel conv take whole output rows (each its own inputs, no output
    line shared) while the weights are at most rows_first_max_weight_bytes, else channel
    blocks; exact either way."""
    target = X86Target(schedule_config=ScheduleConfig(
        min_parallel_popcounts=1, rows_first_max_weight_bytes=max_weight_bytes))
    layer, xq = random_layer("conv2d", act_bits=2, weight_bits=2, in_channels=64,
                             out_channels=64, size=(6, 6), out_bits=2, seed=6)
    kernel = LayerKernel(layer, target=target)
    assert kernel.plan.packed_weight.nbytes > 1024
    sch = s_tir.Schedule(kernel.func)
    outer = sch.get(sch.get_loops(sch.get_sblock(EPILOGUE_BLOCK))[0])
    name = outer.loop_var.name  # the fused loop names its parts in order: nn_yy_0_oc_0_0_...
    assert outer.kind == tirx.ForKind.PARALLEL and "yy" in name and "oc" in name, name
    assert (name.index("yy") < name.index("oc")) == rows_first, name
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


def test_convs_with_few_channels_a_group_get_the_integer_kernel():
    # A word of 64 lanes holding one channel wastes 63 popcount lanes per real MAC.
    layout = Layout(integer_min_branches=17)
    assert layout.uses_integer_kernel(2, group_channels=1)  # depthwise W1A2: 2 x 64
    assert not layout.uses_integer_kernel(2, group_channels=64)
    assert not layout.uses_integer_kernel(4, group_channels=32)  # W2A2 at 32: 4 x 2 = 8
    assert layout.uses_integer_kernel(16, group_channels=32)  # W4A4 at 32: 32
    assert not Layout().uses_integer_kernel(64, group_channels=1)  # no integer kernel at all
    layer, xq = random_layer("conv2d", act_bits=2, weight_bits=1, in_channels=16,
                             out_channels=16, groups=16, seed=4)
    layout = X86Target().layout
    plan = plan_layer(layer, layout)
    # One channel a group: a weight vector spans the int32 lanes of the host's vector (8 on
    # AVX2, 16 on AVX-512), one group each; the input is blocked alike.
    assert plan.kernel == "integer" and plan.oc_block == layout.dot8_oc_block
    kernel = LayerKernel(layer, target=X86Target(), integer_min_branches=17)
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


@pytest.mark.parametrize("strides,pads", [((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 1, 2, 0))])
def test_a_depthwise_conv_on_a_wide_map_copies_its_input_row_by_row(strides, pads):
    """Depthwise integer kernels on maps at least _ROW_ORDER_MIN_WIDTH wide copy NCHW codes
    into channel blocks a row at a time (columns innermost); exact, padding included."""
    from tvm_qnn.target.cpu.schedule import _ROW_ORDER_MIN_WIDTH

    layer, xq = random_layer("conv2d", act_bits=4, weight_bits=4, in_channels=16,
                             out_channels=16, groups=16, size=(5, _ROW_ORDER_MIN_WIDTH),
                             strides=strides, pads=pads, out_bits=4, seed=7)
    kernel = LayerKernel(layer, integer_min_branches=1)
    assert kernel.plan.conv_layout == "integer"
    sch = s_tir.Schedule(kernel.func)
    innermost = sch.get(sch.get_loops(sch.get_sblock("int_input"))[-1])
    assert int(innermost.extent) == _ROW_ORDER_MIN_WIDTH + pads[1] + pads[3]  # the columns
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


def test_thresholds_only_where_the_reduction_outweighs_them():
    # 9 taps a depthwise output: 15 compares (4-bit codes) cost more than the float epilogue.
    for out_bits, thresholds in ((4, False), (3, True)):
        layer, _ = random_layer("conv2d", act_bits=4, weight_bits=4, in_channels=16,
                                out_channels=16, groups=16, out_bits=out_bits, seed=5)
        assert (plan_layer(layer).epilogue.thresholds is not None) == thresholds


def _relax_epilogue(layer, target) -> str:
    """The epilogue store of ``layer``'s kernel as ``compile`` builds it: through Relax's
    ``call_te``, whose PrimFunc has int64 indices; the indices cut out."""
    import re

    import tvm
    from tvm import relax

    from tvm_qnn.topi.layer_kernels import layer_compute

    plan = plan_layer(layer, resolve_target(target).layout)
    bb = relax.BlockBuilder()
    data = relax.Var("data", relax.TensorType(layer.input_shape, layer.input_dtype))
    with bb.function("main", [data]):
        params = [relax.const(arr) for _, arr in plan.epilogue.tensor_params()]
        out = bb.emit(bb.call_te(lambda d, w, *p: layer_compute(plan, d, w, *p), data,
                                 relax.const(plan.packed_weight), *params))
        bb.emit_func_output(out)
    func = next(f for f in bb.get().functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    store = next(line for line in func.script().splitlines()
                 if re.match(r"\s*epilogue\[.*\] =", line))
    value = store.split("] =", 1)[1]
    while re.search(r"\[[^\[\]]*\]", value):
        value = re.sub(r"\[[^\[\]]*\]", "", value)
    return value


@pytest.mark.parametrize("target", ["x86", "x86:haswell"])
@pytest.mark.parametrize("out_bits,max_thresholds", [(2, 15), (None, 0)],
                         ids=["thresholds", "float_requantize"])
def test_epilogue_arithmetic_stays_int32_when_compiled(target, out_bits, max_thresholds):
    """The plan sizes the epilogue's integers (int32 here); Relax builds the kernel with int64
    indices, and that rewrite once widened the threshold comparisons to int64 (twice the
    vector work per output). The float requantization is checked too."""
    layer, _ = random_layer("conv2d", act_bits=2, weight_bits=2, in_channels=64,
                            out_channels=32, out_bits=out_bits, per_channel=False, seed=5)
    assert plan_layer(layer, resolve_target(target).layout).epilogue.acc_dtype == "int32"
    value = _relax_epilogue(layer, target)
    assert "int64" not in value, value
