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
from tvm_qnn.topi.lut_conv import (
    LUT_MAX_ACT_BITS,
    LUT_PAIRED_MAX_POSITIONS,
    lut_chunk,
    lut_pairs,
    pack_lut_weights,
)

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
@settings(max_examples=examples(16))
@given(act_bits=st.integers(1, LUT_MAX_ACT_BITS), weight_bits=st.integers(1, 2),
       act_signed=st.booleans(), cin=st.integers(1, 70), cout=st.sampled_from([64, 128, 256]),
       batch=st.integers(1, 2), size=st.sampled_from([(1, 1), (1, 2), (2, 2), (3, 3)]),
       kernel=st.sampled_from([(1, 1), (3, 3)]), pads=st.sampled_from([0, 1]),
       weight_zero_point=st.integers(-1, 1), act_zero_point=st.integers(0, 255),
       out_bits=st.sampled_from([None, 2]), seed=st.integers(0, 2**16))
def test_paired_nibble_lookups_property(act_bits, weight_bits, act_signed, cin, cout, batch,
                                        size, kernel, pads, weight_zero_point, act_zero_point,
                                        out_bits, seed):
    """Convs of few output positions (a dense of a few rows, a last conv on a 1x1 map) pair
    two channels' weight nibbles in a byte: exact against the reference, whatever the bits,
    the padding, the zero points and the chunking."""
    case = random_conv_case(act_bits=act_bits, weight_bits=weight_bits, act_signed=act_signed,
                            in_channels=cin, out_channels=cout, size=size, kernel=kernel,
                            strides=(1, 1), pads=(pads,) * 4, dilation=(1, 1),
                            weight_zero_point=weight_zero_point, act_zero_point=act_zero_point,
                            out_bits=out_bits, batch=batch, seed=seed)
    assume(case is not None)
    layer, xq = case
    n, _, oh, ow = layer.output_shape
    assume(n * oh * ow <= LUT_PAIRED_MAX_POSITIONS)
    kernel = _lut_kernel(layer)
    assert kernel.plan.lut_pairs and kernel.plan.packed_weight.shape[-1] * 2 == 64
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))


def test_weight_nibbles_pair_where_few_positions_read_them():
    """Pairs need whole 64-channel vectors and at most LUT_PAIRED_MAX_POSITIONS positions."""
    assert lut_pairs(64, 1) and lut_pairs(4096, LUT_PAIRED_MAX_POSITIONS)
    assert not lut_pairs(96, 1) and not lut_pairs(64, LUT_PAIRED_MAX_POSITIONS + 1)
    layout = resolve_target(HASWELL).layout
    for size, pairs in (((1, 1), True), ((7, 7), False)):
        layer, _ = random_layer("conv2d", act_bits=1, weight_bits=1, in_channels=64,
                                out_channels=64, size=size, kernel=(1, 1), pads=(0,) * 4)
        plan = plan_layer(layer, layout)
        assert plan.kernel == "lut" and plan.lut_pairs == pairs
        assert plan.oc_block == (64 if pairs else 32)


@needs_avx2
@pytest.mark.parametrize("act_bits,weight_bits,size", [
    (1, 1, (6, 5)), (2, 2, (6, 5)), (5, 1, (6, 5)),
    (1, 1, (1, 1)), (2, 2, (2, 1)),  # few positions: paired nibbles
])
def test_lut_kernel_in_a_chain_reads_packed_planes(act_bits, weight_bits, size):
    """Inside a chain (channels-last codes packed once, outside the layer), on the widest
    codes (one word per byte sum), and with paired weight nibbles, the same codes as the
    reference."""
    layer, xq = random_layer("conv2d", act_bits=act_bits, weight_bits=weight_bits,
                             in_channels=48, out_channels=64, size=size, seed=act_bits)
    kernel = _lut_kernel(layer, chained=True)
    np.testing.assert_array_equal(kernel(xq), reference_output(layer, xq))
    assert kernel.plan.lut_pairs == (size[0] * size[1] <= LUT_PAIRED_MAX_POSITIONS)


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


def test_paired_weights_hold_two_output_blocks_per_byte():
    """Block 2q's nibble low, block 2q + 1's high: outputs 64q + b and 64q + 32 + b."""
    packed = np.array([[0x12, 0x34], [0xAB, 0xCD], [0x0F, 0xF0], [0x55, 0x66]], np.uint8)
    pairs = pack_lut_weights(packed, pairs=True)
    assert pairs.shape == (2, 2, 2)
    np.testing.assert_array_equal(pairs, [[[0xB2, 0xD4], [0xA1, 0xC3]],
                                          [[0x5F, 0x60], [0x50, 0x6F]]])


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


def test_paired_lookup_step_compiles_to_one_table_load_and_two_shuffles():
    """Compile only: a dense-like conv (one position) on paired nibbles tensorizes every step
    (no select loop), splits the bytes with a word shift and a mask, and shuffles on ymm."""
    layer, _ = random_layer("conv2d", act_bits=1, weight_bits=1, in_channels=256,
                            out_channels=128, size=(1, 1), kernel=(1, 1), pads=(0,) * 4)
    kernel = LayerKernel(layer, target=HASWELL, lut_max_weight_bits=2)
    assert kernel.plan.lut_pairs
    script = kernel.func.script()
    assert script.count("llvm.x86.avx2.pshuf.b") == 2
    assert "if_then_else" not in script.split("branch_chunk_update")[1].split("sblock(")[0]
    asm = kernel.module.inspect_source("asm")
    assert re.search(r"\bvpshufb\s[^\n]*%ymm", asm) and re.search(r"\bvpsrlw\s+\$4", asm)


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
