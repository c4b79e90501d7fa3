# SPDX-License-Identifier: Apache-2.0
"""The test model builders: valid ONNX, both references agree, codes in range, bad args."""

import numpy as np
import onnx
import pytest

from tvm_qnn.testing.float_model import float_twin
from tvm_qnn.testing.onnx_models import (
    QUANT_FORMS,
    make_cnn_model,
    make_conv_model,
    make_dense_model,
    random_input,
    run_onnxruntime,
    run_reference,
)


@pytest.mark.parametrize("form", QUANT_FORMS)
def test_forms_have_their_op_types(form):
    ops = {n.op_type for n in make_conv_model(form, act_bits=4 if form != "qdq" else 8,
                                              weight_bits=2).graph.node}
    expected = {"qdq": {"QuantizeLinear", "DequantizeLinear", "Conv"},
                "qcdq": {"QuantizeLinear", "Clip", "DequantizeLinear", "Conv"},
                "qdq_int4": {"QuantizeLinear", "DequantizeLinear", "Conv"},
                "qoperator": {"QuantizeLinear", "QLinearConv", "DequantizeLinear"},
                "integer": {"ConvInteger"}}[form]
    assert expected <= ops


def test_int4_tensors_are_int4():
    model = make_dense_model("qdq_int4", act_bits=4, weight_bits=3)
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types["w_codes"] == onnx.TensorProto.INT4
    assert types["x_zp"] == onnx.TensorProto.UINT4


def test_weight_codes_use_the_requested_bits():
    model = make_conv_model("qdq", weight_bits=3, seed=1)
    codes = onnx.numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == "w_codes"))
    assert codes.min() >= -4 and codes.max() <= 3 and len(np.unique(codes)) == 8


@pytest.mark.parametrize("kw,match", [
    (dict(form="nope"), "form='nope'"),
    (dict(act_bits=9), "act_bits=9"),
    (dict(weight_bits=0), "weight_bits=0"),
    (dict(form="qdq", act_bits=4), "act_bits must be 8 in form 'qdq'"),
    (dict(form="qdq_int4", act_bits=5), "at most 4 bits"),
    (dict(groups=3), "groups=3 must divide"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make_conv_model(**kw)


def test_float_twin_has_no_quantization_and_tracks_the_model():
    model = make_cnn_model("qcdq", bits=4)
    twin = float_twin(model)
    ops = {n.op_type for n in twin.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear", "Clip"}
    feeds = random_input(model)
    q = run_onnxruntime(model, feeds)[0]
    f = run_onnxruntime(twin, feeds)[0]
    assert q.shape == f.shape and np.corrcoef(q.ravel(), f.ravel())[0, 1] > 0.5


def test_references_agree_on_the_cnn():
    model = make_cnn_model("qdq", bits=2)
    feeds = random_input(model, seed=9)
    np.testing.assert_array_equal(run_reference(model, feeds)[0],
                                  run_onnxruntime(model, feeds)[0])
