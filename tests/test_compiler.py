# SPDX-License-Identifier: Apache-2.0
"""Whole quantized ONNX models: tvm_qnn equals the ONNX semantics bit for bit.

References: ``onnx.reference.ReferenceEvaluator`` and onnxruntime with graph optimizations off
(both agree with each other on these power-of-two-scale models; the test checks that too).
"""

import numpy as np
import pytest

import tvm_qnn
from tvm_qnn.testing.onnx_models import (
    QUANT_FORMS,
    make_cnn_model,
    make_conv_model,
    make_dense_model,
    random_input,
    run_onnxruntime,
    run_reference,
)


def _bits(form):
    return {"qdq": 8, "qcdq": 2, "qdq_int4": 4, "qoperator": 8, "integer": 8}[form]


def _assert_exact(model, seeds=(0, 1)):
    art = tvm_qnn.compile(model, target="x86")
    assert art.layers and all(layer["bitserial"] for layer in art.layers), art.layers
    for seed in seeds:
        feeds = random_input(model, seed=seed)
        ort = run_onnxruntime(model, feeds)[0]
        ref = run_reference(model, feeds)[0]
        np.testing.assert_array_equal(ort, ref)
        np.testing.assert_array_equal(art.run(feeds), ref)
    return art, ref


@pytest.mark.parametrize("form", QUANT_FORMS)
def test_conv_every_form(form):
    model = make_conv_model(form, act_bits=_bits(form), weight_bits=min(3, _bits(form)),
                            in_ch=12, out_ch=16, size=(7, 6), relu=form != "integer", seed=3)
    _, ref = _assert_exact(model)
    assert len(np.unique(ref)) > 2


# QOperator / integer dense layers are QLinearMatMul / MatMulInteger: no Gemm spelling.
@pytest.mark.parametrize("form,use_gemm", [(f, False) for f in QUANT_FORMS]
                         + [("qdq", True), ("qcdq", True), ("qdq_int4", True)])
def test_dense_every_form(form, use_gemm):
    model = make_dense_model(form, act_bits=_bits(form), weight_bits=2, batch=3,
                             in_features=100, out_features=24, use_gemm=use_gemm, seed=5)
    _assert_exact(model)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_qcdq_conv_w_a_bits(bits):
    model = make_conv_model("qcdq", act_bits=bits, weight_bits=bits, in_ch=16, out_ch=16,
                            relu=True, seed=bits)
    art, _ = _assert_exact(model)
    layer = art.layers[0]
    assert (layer["act_bits"], layer["weight_bits"]) == (bits, bits)


@pytest.mark.parametrize("kw", [
    dict(stride=(2, 2), pads=(0, 1, 1, 0)),
    dict(dilation=(2, 1), pads=(2, 1, 2, 1)),
    dict(groups=4, in_ch=8, out_ch=8),
    dict(groups=8, in_ch=8, out_ch=16),  # depthwise, channel multiplier 2
    dict(kernel=(1, 1), pads=(0, 0, 0, 0), per_channel=False),
    dict(act_signed=True, weight_signed=False),
    dict(size=(5, 11), kernel=(3, 5), pads=(1, 2, 1, 2), batch=2),
])
def test_qcdq_conv_geometry(kw):
    args = dict(act_bits=3, weight_bits=2, in_ch=12, out_ch=8, relu=True, seed=11)
    args.update(kw)
    _assert_exact(make_conv_model("qcdq", **args))


def test_non_power_of_two_scales_match_the_reference_within_one_code():
    # With arbitrary scales the float conv of the reference rounds its partial sums, while
    # tvm_qnn computes the exact integer accumulator: outputs may differ by one code.
    model = make_conv_model("qdq", act_bits=8, weight_bits=4, pow2_scales=False, seed=2)
    art = tvm_qnn.compile(model)
    feeds = random_input(model, seed=0)
    ref = run_reference(model, feeds)[0]
    out = art.run(feeds)
    y_scale = float(np.min(np.abs(np.diff(np.unique(ref)))))
    assert np.max(np.abs(out - ref)) <= y_scale * 1.0001


@pytest.mark.parametrize("model", [
    make_dense_model("qdq", in_features=32, out_features=8, weight_bits=2),  # float epilogue
    make_conv_model("qcdq", in_ch=8, out_ch=8, size=(6, 6), act_bits=2, weight_bits=2),
], ids=["float_epilogue", "thresholds"])
def test_huge_scales_saturate_as_onnx_does(model):
    """Found by the fuzzer (tests/test_compiler_fuzz.py): with weight scales of +-1e30 the
    rounded code (~1e34) was cast to int32 before saturating; x86 gives INT_MIN for that, so
    the output saturated to the lowest code where ONNX (and onnxruntime) give the highest."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == "w_scale":
            scales = np.resize(np.float32([1e30, -1e30, 1e30, 1e-30]), init.dims)
            init.CopyFrom(numpy_helper.from_array(scales.astype(np.float32), "w_scale"))
    feeds = random_input(model, seed=0)
    want = run_onnxruntime(model, feeds)[0]
    np.testing.assert_array_equal(tvm_qnn.compile(model, "x86").run(feeds), want)


def test_cnn_demo_model_exact():
    model = make_cnn_model("qcdq", bits=2)
    art, ref = _assert_exact(model, seeds=(0, 1, 2))
    kinds = [(r["kind"], r["weight_bits"], r["act_bits"]) for r in art.layers]
    assert kinds == [("conv2d", 8, 8), ("conv2d", 2, 2), ("conv2d", 2, 2), ("dense", 8, 8)]


def test_qdq_cnn_exact():
    _assert_exact(make_cnn_model("qdq", bits=3), seeds=(4,))
