# SPDX-License-Identifier: Apache-2.0
"""tvm_qnn.frontend.onnx on hostile models: what ONNX defines is matched, what it refuses is
refused with an error naming the node."""

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import tvm_qnn
from tvm_qnn.testing.onnx_models import make_conv_model
from tvm_qnn.testing.onnx_run import run_onnxruntime


def _model(nodes, inputs, inits, shape=(1, 8)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TP.FLOAT, list(shape)) for n in inputs],
        [helper.make_tensor_value_info("y", TP.FLOAT, list(shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _qcdq(lo, hi, dq_zp=None):
    """x -> QuantizeLinear -> Clip(lo, hi) -> DequantizeLinear -> y, on uint8 codes."""
    zp = np.uint8(0)
    return _model([
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
        helper.make_node("Clip", ["q", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("DequantizeLinear", ["c", "s", "dq_zp"], ["y"], name="dequant"),
    ], ["x"], {"s": np.float32(0.1), "zp": zp, "lo": lo, "hi": hi,
               "dq_zp": zp if dq_zp is None else dq_zp})


def test_clip_with_min_above_max_sets_every_code_to_max():
    model = _qcdq(np.uint8(10), np.uint8(5))
    x = {"x": np.linspace(-1, 3, 8, dtype=np.float32).reshape(1, 8)}
    want = run_onnxruntime(model, x)[0]
    np.testing.assert_array_equal(want, np.full((1, 8), 0.5, np.float32))  # ONNX: all max
    np.testing.assert_array_equal(tvm_qnn.compile(model, "x86").run(x), want)


def test_inputs_whose_sanitized_names_collide_keep_their_onnx_names():
    model = _model([helper.make_node("Sub", ["a.b", "a_b"], ["y"], name="sub")],
                   ["a.b", "a_b"], {})
    art = tvm_qnn.compile(model, "x86")
    assert [i.name for i in art.inputs] == ["a.b", "a_b"]
    feeds = {"a.b": np.arange(8, dtype=np.float32).reshape(1, 8),
             "a_b": np.ones((1, 8), np.float32)}
    want = run_onnxruntime(model, feeds)[0]
    np.testing.assert_array_equal(art.run(feeds), want)
    np.testing.assert_array_equal(art.run(feeds["a.b"], feeds["a_b"]), want)


@pytest.mark.parametrize("model, node", [
    # DequantizeLinear of uint8 codes with an int8 zero-point
    (_qcdq(np.uint8(0), np.uint8(255), dq_zp=np.int8(0)), "dequant"),
    # int8 Clip bounds on uint8 codes
    (_qcdq(np.int8(0), np.int8(100)), "clip"),
], ids=["zero_point_dtype", "clip_bounds_dtype"])
def test_models_onnx_refuses_are_refused_naming_the_node(model, node):
    x = {"x": np.zeros((1, 8), np.float32)}
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
        run_onnxruntime(model, x)
    with pytest.raises(tvm_qnn.UnsupportedModelError, match=f"node.*{node}"):
        tvm_qnn.compile(model, "x86")


def _qdq_conv_with(scale: str, value: float):
    model = make_conv_model("qdq", act_bits=8, weight_bits=2)
    for init in model.graph.initializer:
        if init.name == scale:
            arr = np.full(numpy_helper.to_array(init).shape, value, np.float32)
            init.CopyFrom(numpy_helper.from_array(arr, scale))
    return model


@pytest.mark.parametrize("scale, node, op", [("x_scale", "x_q", "QuantizeLinear"),
                                             ("y_scale", "y_q", "QuantizeLinear"),
                                             ("w_scale", "w_wdq", "DequantizeLinear")])
def test_a_zero_scale_is_refused_naming_the_node(scale, node, op):
    """It was TVM's "Check failed: fb->value != 0: Divide by zero" (a ScheduleError for the
    weights)."""
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=rf"node '{node}' \({op}\): input 1 \(a scale\) holds 0.0"):
        tvm_qnn.compile(_qdq_conv_with(scale, 0.0), "x86")


def _replace_initializer(model, name, change):
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), name))
    return model


@pytest.mark.parametrize("name, change, message", [
    ("w_scale", lambda a: a[:3].copy(),
     r"node 'w_wdq' \(DequantizeLinear\): Size mismatch: relax.dequantize: the input shape "
     r"at dim 0 is 'T.int64\(8\)', but size of scale param is 'T.int64\(3\)'$"),
    ("w_codes", lambda a: a[:, :-1].copy(),
     r"node 'layer' \(Conv\): The channel size of the data should equal"),
], ids=["per_channel_scale_length", "weight_channels"])
def test_operands_whose_shapes_do_not_fit_are_refused_naming_the_node(name, change, message):
    """It was TVM's check message inside a dump of the operator's schema, no node named."""
    model = _replace_initializer(make_conv_model("qdq", act_bits=8, weight_bits=2), name, change)
    with pytest.raises(tvm_qnn.UnsupportedModelError, match=message):
        tvm_qnn.compile(model, "x86")


def test_a_zero_size_input_is_refused_naming_the_input():
    """It was a TypeError (int() of a Var) in the importer."""
    model = make_conv_model("qdq", act_bits=8, weight_bits=2)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 0
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"input 'x' has shape \[1, 8, 0, 9\], with a zero-size dimension"):
        tvm_qnn.compile(model, "x86")


def _dilated(form: str, dilation: int):
    model = make_conv_model(form, in_ch=8, out_ch=8, size=(6, 6), weight_bits=2,
                            act_bits=2 if form == "qcdq" else 8)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "dilations":
                attr.ints[:] = [dilation, dilation]
    return model


@pytest.mark.parametrize("form, op", [("qdq", "Conv"), ("qcdq", "Conv"),
                                      ("integer", "ConvInteger"), ("qoperator", "QLinearConv")])
def test_a_window_larger_than_its_input_is_refused_naming_the_node(form, op):
    """Found by the fuzzer (tests/test_compiler_fuzz.py): a 3x3 window dilated by 226 on a 6x6
    input imported as a tensor of shape [1, 8, -444, -444]; TVM's scheduling then failed with
    an InternalError ("Check failed: (!info.dom.IsNothing())") naming no node."""
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=rf"node 'layer' \({op}\) would compute a tensor of shape "
                             r"\[1, 8, -444, -444\], with a dimension < 1"):
        tvm_qnn.compile(_dilated(form, 226), "x86")


def test_operands_in_the_wrong_places_are_refused_naming_the_node():
    """Found by the fuzzer: ConvInteger's inputs reversed (a zero-point as the image) was a
    ValueError from TVM's conv2d ("lead to negative output shape")."""
    model = make_conv_model("integer", in_ch=8, out_ch=8, size=(6, 6), weight_bits=2)
    node = model.graph.node[0]
    node.input[:] = list(node.input)[::-1]
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"node 'layer' \(ConvInteger\) would compute a tensor of shape "
                             r"\[8, 1, 0, 0\]"):
        tvm_qnn.compile(model, "x86")


def _with_attribute(form: str, name: str, value: int):
    model = _dilated(form, 1)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == name and attr.ints:
                attr.ints[:] = [value] * len(attr.ints)
            elif attr.name == name:
                attr.i = value
    return model


@pytest.mark.parametrize("form, name, value, op", [
    ("integer", "dilations", -129, "ConvInteger"), ("qcdq", "dilations", 0, "Conv"),
    ("qdq", "pads", -1, "Conv"), ("qoperator", "strides", 0, "QLinearConv"),
    ("qcdq", "group", 0, "Conv"),
])
def test_window_attributes_onnx_refuses_are_refused_naming_the_node(form, name, value, op):
    """Found by the fuzzer: a negative (or zero) dilation compiled, into a conv that read
    outside its input (SIGSEGV on running it, or garbage); negative pads compiled too.
    onnxruntime refuses them in shape inference."""
    model = _with_attribute(form, name, value)
    feeds = {"x": np.zeros([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim],
                           np.uint8 if form == "integer" else np.float32)}
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error types
        run_onnxruntime(model, feeds)
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=rf"node 'layer' \({op}\): attribute {name}=.*{value}.* must hold "
                             rf"integers >= {int(name != 'pads')}"):
        tvm_qnn.compile(model, "x86")
