# SPDX-License-Identifier: Apache-2.0
"""The table-lookup conv (the lut kernel family): bit-exact, chosen where the target's cost
model says, compiled to byte shuffles."""

import re

import numpy as np
import pytest
from conftest import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tvm_qnn
from tvm_qnn.target import resolve_target
from tvm_qnn.target.x86 import host_cpu_flags
from tvm_qnn.testing.layers import (
    ChainedLayerKernel,
    LayerKernel,
    random_conv_case,
    random_layer,
)
from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_reference
from tvm_qnn.topi.layer import plan_layer, reference_output
from tvm_qnn.topi.layout import FORCED_LUT_WEIGHT_BITS, Layout
from tvm_qnn.topi.lut_conv import LUT_MAX_ACT_BITS, lut_chunk, pack_lut_weights

needs_avx2 = pytest.mark.skipif("avx2" not in host_cpu_flags(),
                                reason="the lookup step (vpshufb on ymm) runs on AVX2 CPUs only")
HASWELL = "x86:haswell"


def _lut_kernel(layer, chained=False):
    cls = ChainedLayerKernel if chained else LayerKernel
    kernel = cls(layer, target=HASWELL, lut_max_weight_bits=FORCED_LUT_WEIGHT_BITS)
    assert kernel.plan.kernel == "lut"
    return kernel


@needs_avx2
@settings(max_examples=examples(30))
@given(act_bits=st.integers(1, LUT_MAX_ACT_BITS), weight_bits=st.integers(1, 3),
       act_signed=st.booleans(), cin=st.integers(1, 40), cout=st.sampled_from([32, 64, 96]),
       size=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       kernel=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
       strides=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 2)] * 4),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       weight_zero_point=st.integers(-2, 2), act_zero_point=st.integers(0, 255),
       out_bits=st.sampled_from([None, 2]), seed=st.integers(0, 2**16))
def test_lut_kernel_property(act_bits, weight_bits, act_signed, cin, cout, size, kernel,
                             strides, pads, dilation, weight_zero_point, act_zero_point,
                             out_bits, seed):
    """Random convs on the lookup kernel equal the integer reference: channels not a multiple
    of 8 (zero bits in the last word), padding with the zero-point code, strides, dilation,
    asymmetric weights (the Su term), every chunking of the byte sums."""
    case = random_conv_case(act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
                            in_channels=cin, out_channels=cout, size=size, kernel=kernel,
                            strides=strides, pads=pads, dilation=dilation,
                            weight_zero_point=weight_zero_point, act_zero_point=act_zero_point,
                            out_bits=out_bits, seed=seed)
    assume(case is not None)
    layer, xq = case
    np.testing.assert_array_equal(_lut_kernel(layer)(xq), reference_output(layer, xq))


@needs_avx2
@pytest.mark.parametrize("act_bits,weight_bits", [(1, 1), (2, 2), (5, 1)])
def test_lut_kernel_in_a_chain_reads_packed_planes(act_bits, weight_bits):
    """Inside a chain (channels-last codes packed once, outside the layer), and on the widest
    codes (one word per byte sum), the same codes as the reference."""
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                             in_channels=48, out_channels=64, size=(6, 5), seed=act_bits)
    np.testing.assert_array_equal(_lut_kernel(layer, chained=True)(xq),
                                  reference_output(layer, xq))


@needs_avx2
def test_model_on_avx2_uses_lookups_and_matches_onnxruntime():
    """A QCDQ CNN compiled for AVX2: its 2-bit convs of 32 output channels take the lookup
    kernel by the cost model, and the logits are onnxruntime's."""
    model = make_cnn_model("qcdq", bits=2)
    art = tvm_qnn.compile(model, target=HASWELL)
    kernels = {r["name"]: (r["kernel"], r["kernel_choice"]) for r in art.layers if r["bitserial"]}
    assert ("lut", "cost model") in kernels.values(), kernels
    feeds = random_input(model, seed=7)
    np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])


def test_byte_sums_widen_before_they_can_overflow():
    """A lookup adds at most 4 (2^M - 1): whole window rows while they fit 255, else a
    divisor of the words with two lookups each."""
    assert lut_chunk(1, 3, 4) == (True, 4)  # 3 x 4 x 2 = 24 lookups of at most 4
    assert lut_chunk(1, 3, 16) == (False, 16)  # 96 would overflow; 32 lookups fit 63
    assert lut_chunk(2, 3, 4) == (False, 4)  # 24 lookups of at most 12 > 255
    assert lut_chunk(2, 3, 16) == (False, 8)
    assert lut_chunk(5, 3, 6) == (False, 1)  # 8 x 31 = 248
    for bits in range(1, LUT_MAX_ACT_BITS + 1):
        rows, words = lut_chunk(bits, 3, 12)
        lookups = 3 * 12 * 2 if rows else 2 * words
        assert lookups * 4 * ((1 << bits) - 1) <= 255


def test_weights_index_the_tables_by_nibble():
    packed = np.array([[0x00, 0x5F, 0xA3]], np.uint8)
    nibbles = pack_lut_weights(packed)
    assert nibbles.shape == (1, 2, 3)
    np.testing.assert_array_equal(nibbles, [[[0x0, 0xF, 0x3], [0x0, 0x5, 0xA]]])


@pytest.mark.parametrize("spec,expected", [
    ("x86:haswell", {(1, 1): "lut", (1, 2): "lut", (2, 2): "lut", (1, 4): "lut",
                     (2, 3): "lut", (2, 4): "int8-dot", (4, 4): "int8-dot"}),
    ("x86:skylake-avx512", {(1, 1): "lut", (2, 2): "lut", (2, 3): "lut", (4, 4): "int8-dot"}),
    ("x86:cascadelake", {(1, 1): "lut", (1, 4): "lut", (2, 2): "lut", (2, 3): "int8-dot"}),
    ("x86:znver4", {(1, 1): "bit-serial", (2, 2): "bit-serial", (4, 4): "int8-dot"}),
])
def test_cost_model_picks_lookups_without_a_vector_popcount(spec, expected):
    """Measured rule (target/x86/lut.py): where popcounts are vpshufb lookups anyway, table
    lookups win up to 2-bit weights and 6 branches (4 against VNNI's dot step); VPOPCNTDQ
    keeps popcounts."""
    layout = resolve_target(spec).layout
    for (w, a), kernel in expected.items():
        layer, _ = random_layer("conv2d", act_bits=a, weight_bits=w, in_channels=64,
                                out_channels=64, seed=w * 10 + a)
        assert plan_layer(layer, layout).kernel == kernel, (spec, w, a)


def test_lookups_need_whole_steps_of_32_channels_and_one_group():
    layout = resolve_target(HASWELL).layout
    for kwargs in (dict(out_channels=48), dict(out_channels=64, groups=2)):
        layer, _ = random_layer("conv2d", act_bits=1, weight_bits=1, in_channels=64,
                                seed=1, **kwargs)
        assert plan_layer(layer, layout).kernel == "bit-serial", kwargs


def test_lut_family_is_a_no_op_where_the_target_has_no_lookups():
    layout = Layout(oc_block=16, word_bits=64)  # VPOPCNTDQ-like: no lookup kernel
    assert layout.with_family("lut") is layout
    assert resolve_target(HASWELL).layout.with_family("lut").lut_max_weight_bits == \
        FORCED_LUT_WEIGHT_BITS
    assert "lut" not in resolve_target("x86:znver4").kernel_families
    assert "lut" in resolve_target(HASWELL).kernel_families


def test_lookup_step_compiles_to_vpshufb():
    """Compile only: every lookup step became the byte shuffle (no select loop over the 16
    entries is left), on ymm registers."""
    layer, _ = random_layer("conv2d", act_bits=2, weight_bits=2, in_channels=32,
                            out_channels=32, seed=5)
    kernel = LayerKernel(layer, target=HASWELL, lut_max_weight_bits=2)
    script = kernel.func.script()
    assert "llvm.x86.avx2.pshuf.b" in script
    assert "if_then_else" not in script.split("branch_chunk_update")[1].split("sblock(")[0]
    assert re.search(r"\bvpshufb\s[^\n]*%ymm", kernel.module.inspect_source("asm"))


@pytest.mark.parametrize("size,parallel", [((7, 7), False), ((10, 10), True)])
def test_lookups_go_parallel_where_popcounts_do(size, parallel):
    """Code for two threads parallelizes a lookup kernel by the same count of work as the
    bit-serial kernel of the layer (outputs x taps x word chunks), not by its shorter branch
    loop: 64 -> 64 channels W1A1 at 7x7 (28 K) stays serial, at 10x10 (58 K) goes parallel
    (counted by its branch loop, 19 K, it stayed serial)."""
    target = resolve_target(HASWELL).for_threads(2)
    layer, _ = random_layer("conv2d", act_bits=1, weight_bits=1, in_channels=64,
                            out_channels=64, size=size, seed=2)
    for lut in (None, FORCED_LUT_WEIGHT_BITS):
        kernel = LayerKernel(layer, target=target, lut_max_weight_bits=lut)
        assert kernel.plan.kernel == ("lut" if lut else "bit-serial")
        assert ("T.parallel" in kernel.func.script()) == parallel, (lut, size)
