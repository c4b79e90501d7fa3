# SPDX-License-Identifier: Apache-2.0
"""Bad input gets a clear error that names the node (or input) and what is supported."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tvm_qnn
from tvm_qnn.errors import InvalidArgumentError
from tvm_qnn.testing.onnx_models import make_conv_model, random_input, run_reference


def _edit(model, fn):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    fn(model.graph)
    return model


def test_unsupported_operator_is_named():
    def add_custom(g):
        g.node.append(helper.make_node("FancyOp", [g.output[0].name], ["z"],
                                       name="my_fancy_node", domain="com.example"))
        g.output[0].name = "z"

    model = _edit(make_conv_model("qcdq", act_bits=2), add_custom)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"FancyOp \(node 'my_fancy_node'\).*Supported:"):
        tvm_qnn.compile(model)


def test_malformed_model():
    def break_input(g):
        g.node[0].input[0] = "does_not_exist"

    with pytest.raises(tvm_qnn.UnsupportedModelError, match="malformed ONNX model"):
        tvm_qnn.compile(_edit(make_conv_model("qcdq", act_bits=2), break_input))


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00not a protobuf")
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="cannot read ONNX model"):
        tvm_qnn.compile(str(path))
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="no model file"):
        tvm_qnn.compile(str(tmp_path / "missing.onnx"))


def test_dynamic_shape_names_the_input():
    def make_dynamic(g):
        g.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"

    model = _edit(make_conv_model("qcdq", act_bits=2), make_dynamic)
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"input 'x' has dynamic dimension\(s\) \['batch'\]"):
        tvm_qnn.compile(model)
    art = tvm_qnn.compile(model, shapes={"x": (1, 8, 9, 9)})
    assert art.inputs[0].shape == (1, 8, 9, 9)


@pytest.mark.parametrize("shapes, message", [
    ({"x": (1, 8)}, r"shapes\['x'\] = \(1, 8\): input 'x' has 4 dimensions \['batch', 8, 9, 9\]"),
    ({"x": (1, 8, 0, 9)}, r"give 4 integers >= 1"),
    ({"x": "1,8,9,9"}, r"shapes\['x'\] = '1,8,9,9'"),
    ({"image": (1, 8, 9, 9)}, r"shapes names \['image'\], not inputs of the model; its inputs "
                              r"are \['x'\]"),
])
def test_shapes_that_do_not_fit_the_inputs_are_named(shapes, message):
    """A wrong rank used to fail deep in the importer ("Ndim > 5 not supported for
    convolution"), an unknown name was ignored."""
    def make_dynamic(g):
        g.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"

    model = _edit(make_conv_model("qcdq", act_bits=2), make_dynamic)
    with pytest.raises(InvalidArgumentError, match=message):
        tvm_qnn.compile(model, shapes=shapes)


def _nine_bit_model():
    """A QCDQ conv whose activations are clipped to 9 bits (int16 codes [0, 511])."""
    base = make_conv_model("qcdq", act_bits=2, weight_bits=2, relu=True)

    def widen(g):
        inits = {i.name: i for i in g.initializer}
        for name, value in (("x_zp", 0), ("x_lo", 0), ("x_hi", 511)):
            inits[name].CopyFrom(helper.make_tensor(name, TensorProto.INT16, [], [value]))

    return _edit(base, widen)


def test_nine_bit_layer_stays_float_and_is_still_exact():
    model = _nine_bit_model()
    art = tvm_qnn.compile(model)
    (row,) = art.layers
    assert not row["bitserial"] and "activations use 9 bits (1..8 supported)" in row["reason"]
    feeds = random_input(model)
    np.testing.assert_array_equal(art.run(feeds), run_reference(model, feeds)[0])


def test_strict_mode_raises_naming_the_layer():
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"layer 'layer' \(conv2d\) cannot be made bit-serial: "
                             r"activations use 9 bits"):
        tvm_qnn.compile(_nine_bit_model(), strict=True)


def test_zero_bit_activations():
    def collapse(g):
        inits = {i.name: i for i in g.initializer}
        inits["x_hi"].CopyFrom(helper.make_tensor("x_hi", TensorProto.UINT8, [], [0]))

    model = _edit(make_conv_model("qcdq", act_bits=2, weight_bits=2), collapse)
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="0 bits"):
        tvm_qnn.compile(model, strict=True)


def test_unknown_target():
    with pytest.raises(tvm_qnn.TvmQnnError, match="unknown target 'riscv'"):
        tvm_qnn.compile(make_conv_model("qcdq", act_bits=2), target="riscv")
    with pytest.raises(tvm_qnn.TvmQnnError, match="LLVM knows no x86 CPU 'pentium9'"):
        tvm_qnn.compile(make_conv_model("qcdq", act_bits=2), target="x86:pentium9")


_COMPILE_FOR = """
import sys
import tvm_qnn
from tvm_qnn.errors import InvalidArgumentError
from tvm_qnn.testing.onnx_models import make_conv_model
model = make_conv_model("qcdq", act_bits=2)
for spec in sys.argv[1:]:
    try:
        tvm_qnn.compile(model, target=eval(spec))  # a string or a target dict
        print("compiled", spec, flush=True)
    except InvalidArgumentError as err:
        print("ERROR", err, flush=True)
"""


def test_a_32_bit_x86_cpu_is_refused_before_llvm_aborts():
    """``x86:i386`` ended the process ("LLVM ERROR: 64-bit code requested on a subtarget that
    doesn't support it!", exit 1, no exception): refused, naming the CPU and what works. In a
    subprocess: an abort fails the test instead of killing pytest."""
    import subprocess
    import sys

    specs = ["'x86:i386'", "'x86:pentium4'", "{'kind': 'llvm', 'mcpu': 'i686'}"]
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR, *specs], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    errors = done.stdout.splitlines()
    assert len(errors) == 3 and all(e.startswith("ERROR target ") for e in errors), errors
    for cpu, line in zip(("i386", "pentium4", "i686"), errors, strict=True):
        assert f"'{cpu}' is a 32-bit x86 CPU; tvm_qnn generates x86-64 code only" in line
        assert "e.g. x86-64, haswell" in line


def test_x86_mcpu_target_compiles_the_avx2_path():
    """``x86:haswell``: the AVX2 code path (it runs on this host too), bit-exact."""
    from tvm_qnn.testing.onnx_models import random_input, run_onnxruntime

    model = make_conv_model("qcdq", act_bits=2, weight_bits=2, in_ch=16, out_ch=16)
    art = tvm_qnn.compile(model, target="x86:haswell")
    assert "haswell, AVX2" in art.target
    feeds = random_input(model, seed=1)
    np.testing.assert_array_equal(art.run(*feeds.values()), run_onnxruntime(model, feeds)[0])


def test_wrong_model_type():
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="cannot compile a dict"):
        tvm_qnn.compile({"not": "a model"})
