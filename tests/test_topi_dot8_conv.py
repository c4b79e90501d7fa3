# SPDX-License-Identifier: Apache-2.0
"""The u8 × s8 dot-product conv (the int8-dot kernel family): bit-exact, chosen where the
target's cost model says, compiled to each x86 class's instruction."""

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tvm_qnn
from tvm_qnn.target import resolve_target
from tvm_qnn.target.x86 import X86Target, host_cpu_flags
from tvm_qnn.testing.layers import LayerKernel, random_conv_case, random_layer
from tvm_qnn.testing.onnx_models import (
    make_cnn_model,
    make_dense_model,
    random_input,
    run_reference,
)
from tvm_qnn.topi.dot8_conv import dot8_eligible
from tvm_qnn.topi.layer import plan_layer, reference_output
from tvm_qnn.topi.layout import Layout

needs_avx2 = pytest.mark.skipif("avx2" not in host_cpu_flags(),
                                reason="the AVX2 dot step runs on AVX2 CPUs only")
# Every layer that fits goes to the AVX2 dot kernel (8 channels per vpmaddubsw step).
AVX2_EVERYWHERE = X86Target(mcpu="haswell", layout=Layout(oc_block=8, dot8_min_branches=1))


@needs_avx2
@settings(max_examples=examples(30))
@given(act_bits=st.integers(1, 8), weight_bits=st.integers(1, 6), act_signed=st.booleans(),
       cin=st.integers(1, 40), cout=st.sampled_from([8, 16, 24, 40]),
       size=st.tuples(st.integers(1, 8), st.integers(1, 8)),
       kernel=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
       strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       weight_zero_point=st.integers(-3, 3), act_zero_point=st.integers(0, 255),
       out_quant=st.booleans(), out_bits=st.sampled_from([None, 2]), seed=st.integers(0, 2**16))
def test_dot8_kernel_property(act_bits, weight_bits, act_signed, cin, cout, size, kernel,
                              strides, pads, dilation, weight_zero_point, act_zero_point,
                              out_quant, out_bits, seed):
    """Random convs on the dot kernel equal the integer reference: channels not a multiple of
    4, padding with the zero-point code, strides, dilation, weight zero-points."""
    case = random_conv_case(act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
                            in_channels=cin, out_channels=cout, size=size, kernel=kernel,
                            strides=strides, pads=pads, dilation=dilation,
                            weight_zero_point=weight_zero_point, act_zero_point=act_zero_point,
                            out_quant=out_quant, out_bits=out_bits, seed=seed)
    assume(case is not None)
    layer, xq = case
    k = LayerKernel(layer, target=AVX2_EVERYWHERE, dot8_min_branches=1)
    assume(k.plan.conv_layout == "dot8")  # layers that could saturate int16 stay bit-serial
    np.testing.assert_array_equal(k(xq), reference_output(layer, xq))


def test_eligibility_keeps_int16_pairs_from_saturating():
    weights = np.array([[-64, 64]])
    assert dot8_eligible(8, weights, groups=1)  # 2 * 255 * 64 = 32640 fits int16
    assert not dot8_eligible(8, weights * 2, groups=1)  # 65280 would saturate
    assert dot8_eligible(2, np.array([[-128, 127]]), groups=1)
    assert not dot8_eligible(2, np.array([[-129, 0]]), groups=1)  # not a signed byte
    assert not dot8_eligible(2, weights, groups=2)  # grouped convs keep popcounts


@pytest.mark.parametrize("spec,popcount_up_to,dot_from", [
    ("x86:haswell", (1, 2), (2, 2)),  # AVX2: vpshufb popcounts cost more from 4 branches
    ("x86:znver3", (1, 2), (2, 2)),
    ("x86:skylake-avx512", (1, 2), (1, 3)),  # vpshufb on zmm vs vpmaddubsw on zmm
    ("x86:cascadelake", (1, 1), (1, 2)),  # vpshufb on zmm vs VNNI
    ("x86:icelake-server", (1, 3), (2, 2)),  # vpopcntq vs VNNI on two 512-bit ports
    ("x86:sapphirerapids", (1, 3), (2, 2)),
    ("x86:rocketlake", (2, 3), (2, 4)),  # vpopcntq vs VNNI at one 512-bit rate
    ("x86:znver4", (2, 3), (2, 4)),
])
def test_each_class_sends_wide_layers_to_the_dot_kernel(spec, popcount_up_to, dot_from):
    """The cost model of each x86 class (measured, see target/x86/dot8.py): layers with up to
    ``popcount_up_to`` (W, A) bits keep popcounts, from ``dot_from`` on they take the dot
    kernel; W1A1 is always bit-serial and W4A4 always int8-dot."""
    layout = resolve_target(spec).layout
    for (w, a), kernel in ((popcount_up_to, "bit-serial"), ((1, 1), "bit-serial"),
                           (dot_from, "int8-dot"), ((4, 4), "int8-dot")):
        # 64 channels fill a word: fewer would weigh the branches up (integer kernel).
        layer, _ = random_layer("conv2d", act_bits=a, weight_bits=w, in_channels=64,
                                out_channels=16, seed=w * 10 + a)
        assert plan_layer(layer, layout).kernel == kernel, (spec, w, a)
    assert resolve_target("accel").layout.dot8_min_branches is None  # P comes from the device


def test_a_host_that_calls_itself_a_xeon_counts_as_one(monkeypatch):
    """A VM may report a client CPU model for a Xeon: the host's model name decides."""
    from tvm_qnn.target import x86

    monkeypatch.delenv("TVM_QNN_X86_CPU", raising=False)  # the host, not a forced class
    for xeon in (True, False):
        monkeypatch.setattr(x86, "host_is_xeon", lambda xeon=xeon: xeon)
        assert x86.X86Target().full_rate_vnni is xeon or x86.X86Target().mcpu in \
            x86.FULL_RATE_VNNI_CPUS
    assert not x86.X86Target(mcpu="rocketlake").full_rate_vnni  # an explicit mcpu is as named


@pytest.mark.parametrize("spec,family,instruction", [
    ("x86:haswell", "avx2", r"\bvpmaddubsw\s[^\n]*%ymm"),
    ("x86:skylake-avx512", "avx512", r"\bvpmaddubsw\s[^\n]*%zmm"),
    ("x86:icelake-server", "vnni", r"\bvpdpbusd\s[^\n]*%zmm"),
])
def test_each_class_compiles_its_dot_step(spec, family, instruction):
    """Compile only (no AVX-512 needed here): the step's instruction is in the assembly."""
    base = resolve_target(spec)
    assert base.dot_family == family
    target = X86Target(mcpu=base.mcpu, layout=replace(base.layout, dot8_min_branches=1))
    layer, _ = random_layer("conv2d", act_bits=2, weight_bits=2, in_channels=16,
                            out_channels=32, seed=3)
    k = LayerKernel(layer, target=target, dot8_min_branches=1)
    assert k.plan.conv_layout == "dot8"
    assert re.search(instruction, k.module.inspect_source("asm"))


@pytest.mark.parametrize("spec,instruction", [
    ("x86:skylake-avx512", r"\bvpmaddubsw\s[^\n]*%ymm"),
    ("x86:icelake-server", r"\bvpdpbusd\s[^\n]*%ymm"),
])
def test_channels_in_eights_take_the_narrow_step_on_avx512(spec, instruction):
    """24 output channels (ProxylessNAS' 24, 56, 136): not a multiple of an AVX-512 class's
    16-channel step, so the 8-channel one on ymm (they took the integer kernel before)."""
    layout = resolve_target(spec).layout
    assert layout.dot8_oc_block == 16 and layout.dot8_narrow_oc_block == 8
    layer, _ = random_layer("conv2d", act_bits=4, weight_bits=4, in_channels=64,
                            out_channels=24, seed=5)
    plan = plan_layer(layer, layout)
    assert (plan.kernel, plan.oc_block) == ("int8-dot", 8)
    k = LayerKernel(layer, target=spec, dot8_min_branches=1)
    assert re.search(instruction, k.module.inspect_source("asm"))
    # Channels in fours have no step: another kernel, as before.
    layer, _ = random_layer("conv2d", act_bits=4, weight_bits=4, in_channels=64,
                            out_channels=12, seed=5)
    assert plan_layer(layer, layout).kernel != "int8-dot"
    assert resolve_target("x86:haswell").layout.dot8_narrow_oc_block is None


HOST = X86Target()
needs_avx512_dot = pytest.mark.skipif(
    HOST.layout.dot8_narrow_oc_block is None or "avx512vl" not in host_cpu_flags(),
    reason="this CPU has no AVX-512 dot step (AVX-512 BW/VL) to run")


@needs_avx512_dot
@settings(max_examples=examples(12))
@given(act_bits=st.integers(1, 8), cin=st.integers(1, 40), cout=st.sampled_from([8, 24, 40]),
       kernel=st.sampled_from([(1, 1), (3, 3)]), act_zero_point=st.integers(0, 255),
       out_quant=st.booleans(), seed=st.integers(0, 2**16))
def test_narrow_dot_step_is_exact_on_this_cpu(act_bits, cin, cout, kernel, act_zero_point,
                                              out_quant, seed):
    """The 8-channel step of this AVX-512 CPU's family equals the integer reference."""
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=4, in_channels=cin,
                             out_channels=cout, size=(5, 7), kernel=kernel, pads=(1, 1, 1, 1),
                             act_zero_point=act_zero_point % (1 << act_bits),
                             out_quant=out_quant, seed=seed)
    k = LayerKernel(layer, target=HOST, dot8_min_branches=1)
    assume(k.plan.conv_layout == "dot8")
    assert k.plan.oc_block == 8
    np.testing.assert_array_equal(k(xq), reference_output(layer, xq))


@needs_avx2
def test_model_on_avx2_uses_the_dot_kernel_and_stays_exact():
    model = make_cnn_model("qcdq", bits=4)  # W4A4: the dot kernel's, not the lookups'
    art = tvm_qnn.compile(model, target="x86:haswell")
    kernels = {row["name"]: row["kernel"] for row in art.layers if row["bitserial"]}
    assert "int8-dot" in kernels.values(), kernels
    feeds = random_input(model, seed=4)
    np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])


@needs_avx2
@pytest.mark.parametrize("rows,out_features,kernel,options", [
    (8, 16, "int8-dot", dict(relu=True)),
    (16, 16, "int8-dot", dict(act_signed=True, weight_signed=False, bias=True)),
    (8, 32, "lut", dict(relu=True)),  # 32 channels: a lookup step's, which wins at W2A2
    (1, 32, "lut", dict(relu=True)),  # ... from one row on (DENSE_LUT_MIN_BRANCHES)
    (2, 16, "bit-serial", dict(relu=True)),  # few rows: the byte weights cost more to read
])
def test_dense_layers_with_enough_rows_run_as_dot_convs(rows, out_features, kernel, options):
    """A W2A2 dense of ``rows`` rows on AVX2: from 8 rows on it is a 1x1 conv over the rows
    (``topi.dense_dot8``), transposed in and out by the rewrite, on the dot kernel or, where
    it fits, the lookup kernel; exact either way."""
    model = make_dense_model("qcdq", batch=rows, in_features=64, out_features=out_features,
                             act_bits=2, weight_bits=2, **options)
    art = tvm_qnn.compile(model, target="x86:haswell")
    (row,) = [r for r in art.layers if r["bitserial"]]
    assert row["kind"] == "dense" and row["kernel"] == kernel
    feeds = random_input(model, seed=rows)
    np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])


@needs_avx2
@pytest.mark.parametrize("rows,wbits,abits,out,kernel", [
    (1, 1, 2, 32, "lut"), (3, 1, 2, 32, "lut"), (6, 1, 2, 64, "lut"),
    # One branch: popcounts, unless few rows pair the nibbles (whole 64-channel vectors).
    (1, 1, 1, 32, "bit-serial"), (64, 1, 1, 64, "bit-serial"),
    (1, 1, 1, 64, "lut"), (4, 1, 1, 128, "lut"), (5, 1, 1, 128, "bit-serial"),
])
def test_dense_layers_of_several_branches_take_the_lookups_at_any_rows(rows, wbits, abits,
                                                                      out, kernel):
    """From two branches on a dense layer runs on the lookups from one row on (as 1x1 convs
    over its rows); a one-branch one keeps popcounts where its nibbles do not pair. Exact
    either way."""
    model = make_dense_model("qcdq", batch=rows, in_features=64, out_features=out,
                             act_bits=abits, weight_bits=wbits, relu=True)
    art = tvm_qnn.compile(model, target="x86:haswell")
    (row,) = [r for r in art.layers if r["bitserial"]]
    assert row["kind"] == "dense" and row["kernel"] == kernel
    feeds = random_input(model, seed=rows + abits)
    np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])


@needs_avx2
@pytest.mark.parametrize("rows,vectors", [(1, 4), (2, 4), (5, 1)])
def test_a_narrow_lookup_kernel_shares_each_table_between_weight_vectors(rows, vectors):
    """A dense of 1-2 rows on the lookups (outputs that narrow) has a register tile of
    lut_narrow_oc_vectors weight vectors; wider, lut_tile's. Exact either way."""
    from tvm import s_tir, tirx

    from tvm_qnn.topi.attrs import BRANCH_BLOCK
    from tvm_qnn.topi.dense_dot8 import dense_as_conv

    layer, xq = random_layer("dense", act_bits=2, weight_bits=2, in_channels=64,
                             out_channels=256, batch=rows, seed=rows)
    conv = dense_as_conv(layer)
    kernel = LayerKernel(conv, target="x86:haswell", lut_max_weight_bits=2)
    assert kernel.plan.kernel == "lut"
    sch = s_tir.Schedule(kernel.func)
    loops = [sch.get(lp) for lp in sch.get_loops(sch.get_sblock(f"{BRANCH_BLOCK}_update"))]
    tile = [int(lp.extent) for lp in loops if lp.kind == tirx.ForKind.UNROLLED]
    assert vectors in tile and (vectors > 1 or 4 not in tile), tile
    out = kernel(np.ascontiguousarray(xq.T)[None, :, None, :])
    np.testing.assert_array_equal(out[0, :, 0, :].T, reference_output(layer, xq))


@needs_avx2
@pytest.mark.parametrize("cin,kernel,strides,pads,dilation", [
    (1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # a grayscale image's first conv
    (3, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # RGB, stride 2 (MobileNet's first conv)
    (2, (2, 3), (1, 2), (0, 2, 1, 0), (2, 1)),  # uneven padding, dilation
])
def test_few_channel_convs_fold_their_window_into_the_dot_steps(cin, kernel, strides, pads,
                                                                 dilation):
    """KH·KW·C bytes per output position in steps of 4, not 4 per tap: exact, with the
    padding's zero-point code inside the gathered windows."""
    layer, xq = random_layer("conv2d", act_bits=8, weight_bits=5, in_channels=cin,
                             out_channels=16, size=(9, 10), kernel=kernel, strides=strides,
                             pads=pads, dilation=dilation, act_zero_point=17, seed=cin)
    k = LayerKernel(layer, target=AVX2_EVERYWHERE, dot8_min_branches=1)
    assert k.plan.conv_layout == "dot8"
    taps = kernel[0] * kernel[1] * cin
    assert k.plan.packed_weight.shape[1:4] == (1, 1, -(-taps // 4))
    np.testing.assert_array_equal(k(xq), reference_output(layer, xq))
