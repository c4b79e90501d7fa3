# SPDX-License-Identifier: Apache-2.0
"""QONNX (Brevitas) models: Quant / BipolarQuant / Trunc, and the ESPCN the qonnx wheel ships."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvm_qnn

qonnx = pytest.importorskip("qonnx")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402

DOMAIN = "qonnx.custom_op.general"
ESPCN = os.path.join(os.path.dirname(qonnx.__file__), "data", "onnx", "bsd300x3-espcn")


def _qonnx_run(model, x):
    wrapped = ModelWrapper(model).transform(InferShapes())
    return list(execute_onnx(wrapped, {model.graph.input[0].name: x}).values())[0]


@pytest.mark.parametrize("variant", ["subpixel", "nn_resize"])
def test_brevitas_espcn_matches_qonnx_execution(variant):
    model = onnx.load(os.path.join(ESPCN, variant, "quant_model.onnx"))
    x = numpy_helper.to_array(onnx.load_tensor(os.path.join(ESPCN, "test_data",
                                                            "input_0.pb")))
    art = tvm_qnn.compile(model, target="x86")
    precisions = {(r["weight_bits"], r["act_bits"]) for r in art.layers if r["bitserial"]}
    assert (4, 4) in precisions and sum(r["bitserial"] for r in art.layers) == 3
    want = _qonnx_run(model, x)
    got = art.run(x)
    # Non-power-of-two scales: qonnx's float convolution rounds its partial sums, tvm_qnn's
    # accumulator is exact, so a few outputs land one code (1/255) apart.
    diff = np.abs(got - want)
    assert np.mean(diff == 0) > 0.999
    assert diff.max() <= np.float32(1 / 255) * 1.0001


def _between(kind: str, src: str) -> tuple[list, list, str]:
    """Nodes an exporter may put between the activation quantizer's output ``src`` and the
    conv (an identity in effect, or a zero padding the conv then does not repeat), their
    initializers, and the tensor the conv reads."""
    make, arr = helper.make_node, numpy_helper.from_array
    if kind == "identity":
        return [make("Identity", [src], ["xb"], name="ident")], [], "xb"
    if kind == "pad":
        return [make("Pad", [src, "pads"], ["xb"], name="pad", mode="constant")], [
            arr(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")], "xb"
    if kind == "transpose":
        return [make("Transpose", [src], ["xt"], name="t1", perm=[0, 1, 3, 2]),
                make("Transpose", ["xt"], ["xb"], name="t2", perm=[0, 1, 3, 2])], [], "xb"
    if kind == "rescale":  # a Div by the scale and a Mul back
        return [make("Div", [src, "s_again"], ["xd"], name="div"),
                make("Mul", ["s_again", "xd"], ["xb"], name="mul")], [
            arr(np.float32(0.25), "s_again")], "xb"
    assert kind == "reshape"
    return [make("Reshape", [src, "flat"], ["xr"], name="r1"),
            make("Reshape", ["xr", "image"], ["xb"], name="r2")], [
        arr(np.array([1, 6, 49], np.int64), "flat"),
        arr(np.array([1, 6, 7, 7], np.int64), "image")], "xb"


def _tiny(bipolar_act: bool, trunc: bool, bipolar_weight: bool = False, pool: bool = False,
          bias_bits: int = 0, w_bits: int = 3, bn_bipolar: bool = False, conv_pads: int = 1,
          between: str = ""):
    """x → Quant/BipolarQuant [→ MaxPool] [→ ``between``] → Conv(Quant/BipolarQuant(W)
    [, Quant(bias)]) → Relu → Quant (→ Trunc): power-of-two scales, the shapes Brevitas
    exports."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("s_x", np.float32(0.25)), ("z0", np.float32(0)), ("b_x", np.float32(3)),
        ("w", (rng.integers(-4, 4, size=(8, 6, 3, 3)) * 0.125).astype(np.float32)),
        ("s_w", np.full((8, 1, 1, 1), 0.125, np.float32)), ("b_w", np.float32(w_bits)),
        ("s_y", np.float32(0.5)), ("b_y", np.float32(4)), ("b_t", np.float32(2)),
        ("bias", (rng.integers(-64, 64, size=8) / 32).astype(np.float32)),
        ("s_b", np.float32(1 / 32)), ("b_b", np.float32(bias_bits or 8)),
        # BatchNorm with some negative scales (those channels' thresholds are mirrored)
        ("gamma", rng.normal(size=8).astype(np.float32)),
        ("beta", rng.normal(size=8).astype(np.float32)),
        ("mean", rng.normal(size=8).astype(np.float32)),
        ("var", rng.uniform(0.5, 2, size=8).astype(np.float32))]]
    act = helper.make_node("BipolarQuant", ["x", "s_x"], ["xq"], domain=DOMAIN, name="actq") \
        if bipolar_act else helper.make_node("Quant", ["x", "s_x", "z0", "b_x"], ["xq"],
                                             domain=DOMAIN, name="actq", signed=1, narrow=0)
    wq = helper.make_node("BipolarQuant", ["w", "s_w"], ["wq"], domain=DOMAIN, name="wq") \
        if bipolar_weight else helper.make_node("Quant", ["w", "s_w", "z0", "b_w"], ["wq"],
                                                domain=DOMAIN, name="wq", signed=1, narrow=1)
    nodes = [act, wq]
    conv_in, size = "xq", 7
    if pool:  # Brevitas' CNV: MaxPool between the activation quantizer and the next conv
        nodes.append(helper.make_node("MaxPool", ["xq"], ["xp"], name="pool",
                                      kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 0, 0]))
        conv_in, size = "xp", 4
    if between:
        extra, extra_inits, conv_in = _between(between, conv_in)
        nodes += extra
        inits += extra_inits
        if between == "pad":  # the Pad does the conv's padding: same output size
            conv_pads, size = 0, size + 2
    conv_inputs = [conv_in, "wq"]
    if bias_bits:  # Brevitas' 32-bit bias quantizer (a Quant of a constant)
        nodes.append(helper.make_node("Quant", ["bias", "s_b", "z0", "b_b"], ["bq"],
                                      domain=DOMAIN, name="biasq", signed=1, narrow=0))
        conv_inputs.append("bq")
    nodes.append(helper.make_node("Conv", conv_inputs, ["c"], name="conv",
                                  pads=[conv_pads] * 4))
    size -= 2 - 2 * conv_pads
    if bn_bipolar:  # Brevitas' binary CNV block: BatchNorm → BipolarQuant
        nodes += [helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"],
                                   ["n"], name="bn"),
                  helper.make_node("BipolarQuant", ["n", "s_y"], ["y"], domain=DOMAIN,
                                   name="outq")]
    else:
        nodes += [helper.make_node("Relu", ["c"], ["r"], name="relu"),
                  helper.make_node("Quant", ["r", "s_y", "z0", "b_y"], ["y"], domain=DOMAIN,
                                   name="outq", signed=0, narrow=0)]
    out = "y"
    if trunc:
        nodes.append(helper.make_node("Trunc", ["y", "s_y", "z0", "b_y", "b_t"], ["t"],
                                      domain=DOMAIN, name="trunc", rounding_mode="FLOOR"))
        out = "t"
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 6, 7, 7])], [helper.make_tensor_value_info(
            out, TensorProto.FLOAT, [1, 8, size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid(DOMAIN, 1)])


@pytest.mark.parametrize("bipolar_act,trunc", [(False, False), (True, False), (False, True)])
def test_qonnx_ops_bit_exact(bipolar_act, trunc):
    model = _tiny(bipolar_act, trunc)
    art = tvm_qnn.compile(model)
    (row,) = art.layers
    assert row["bitserial"] and row["weight_bits"] <= 3
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(1, 6, 7, 7)).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _qonnx_run(model, x))


@pytest.mark.parametrize("case", [
    dict(bipolar_weight=True),  # BipolarQuant weights fold to {-1, +1} codes: one plane
    dict(bipolar_weight=True, bipolar_act=True),
    dict(pool=True),  # MaxPool between the quantizer and the conv
    dict(pool=True, bipolar_act=True, bipolar_weight=True),  # a CNV block
    dict(bias_bits=32),  # a 32-bit bias Quant folds to a float constant at import
    dict(bias_bits=31),
    dict(w_bits=1),  # qonnx runs a signed 1-bit Quant as BipolarQuant
    dict(bn_bipolar=True, bipolar_weight=True),  # BatchNorm + sign fold into the epilogue
    # Bipolar activations are one plane (codes 2 apart) where no padding needs a zero code
    dict(bipolar_act=True, bipolar_weight=True, conv_pads=0, bn_bipolar=True),
    dict(bipolar_act=True, pool=True, conv_pads=0),
    # What exporters put between a quantizer and a layer: identities, a zero Pad (joins the
    # conv's padding), transposes and reshapes (of the codes), a rescale by the scale
    *(dict(between=k) for k in ("identity", "pad", "transpose", "reshape", "rescale")),
    dict(between="transpose", pool=True, bipolar_act=True),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_brevitas_export_patterns_stay_bit_serial(case):
    model = _tiny(case.get("bipolar_act", False), False,
                  **{k: v for k, v in case.items() if k != "bipolar_act"})
    art = tvm_qnn.compile(model)
    (row,) = art.layers
    assert row["bitserial"], row["reason"]
    if case.get("bipolar_weight") or case.get("w_bits") == 1:
        assert row["weight_bits"] == 1
    if case.get("bipolar_act"):  # padded: {-1, 0, +1} codes, two planes
        assert row["act_bits"] == (2 if case.get("conv_pads", 1) else 1)
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(1, 6, 7, 7)).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _qonnx_run(model, x))


def test_batch_norm_and_bipolar_quant_end_the_layer():
    # The layer's epilogue takes the BatchNorm and the sign: its output is the ±1 codes.
    (match,) = tvm_qnn.transform.find_layers(
        tvm_qnn.frontend.load_onnx(_tiny(False, False, bn_bipolar=True))["main"])
    out = match.layer.output
    assert out.bipolar and (out.qmin, out.qmax, out.out_dtype) == (-1, 1, "int8")
    assert np.any(match.layer.weight_scale < 0)  # negative BatchNorm scales folded in


def test_a_wide_quant_of_a_run_time_tensor_is_named():
    model = _tiny(False, False)
    model.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.float32(24), "b_x"))
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"node 'actq': a 24-bit Quant of a run-time tensor"):
        tvm_qnn.compile(model)


def test_unsupported_rounding_mode_is_named():
    model = _tiny(False, False)
    model.graph.node[0].attribute.append(helper.make_attribute("rounding_mode", "CEIL"))
    with pytest.raises(tvm_qnn.UnsupportedModelError,
                       match=r"node 'actq': Quant rounding_mode CEIL \(ROUND supported\)"):
        tvm_qnn.compile(model)


def test_a_binary_block_on_the_accelerator_is_exact():
    # One-plane bipolar activations reach the accelerator's input image as bits too.
    model = _tiny(True, False, bipolar_weight=True, conv_pads=0, bn_bipolar=True)
    art = tvm_qnn.compile(model, target="accel")
    (row,) = art.layers
    assert (row["device"], row["act_bits"], row["weight_bits"]) == ("accel", 1, 1)
    for seed in range(2):
        x = np.random.default_rng(seed).normal(size=(1, 6, 7, 7)).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _qonnx_run(model, x))


def _avgpool_trunc_gemm():
    """x → Quant(4 bits) → AveragePool → Trunc v2 → Flatten → Gemm: Brevitas' TruncAvgPool
    before the classifier (MobileNet, ResNet)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("s_x", np.float32(0.25)), ("z0", np.float32(0)), ("b4", np.float32(4)),
        ("s_t", np.float32(0.25 / 4)), ("b6", np.float32(6)), ("s_o", np.float32(0.25)),
        ("w", rng.normal(size=(10, 16)).astype(np.float32)),
        ("s_w", np.float32(0.5)), ("b2", np.float32(2))]]
    nodes = [
        helper.make_node("Quant", ["x", "s_x", "z0", "b4"], ["xq"], domain=DOMAIN, name="actq",
                         signed=0, narrow=0),
        helper.make_node("AveragePool", ["xq"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Trunc", ["p", "s_t", "z0", "b6", "s_o", "b4"], ["t"], domain=DOMAIN,
                         name="trunc", rounding_mode="FLOOR", signed=0, narrow=0),
        helper.make_node("Flatten", ["t"], ["f"], name="flatten"),
        helper.make_node("Quant", ["w", "s_w", "z0", "b2"], ["wq"], domain=DOMAIN, name="wq",
                         signed=1, narrow=1),
        helper.make_node("Gemm", ["f", "wq"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "avgpool_trunc", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 16, 2, 2])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid(DOMAIN, 2)])


def test_a_linear_after_avgpool_and_trunc_stays_bit_serial():
    model = _avgpool_trunc_gemm()
    art = tvm_qnn.compile(model)
    (row,) = art.layers
    assert row["bitserial"] and (row["act_bits"], row["weight_bits"]) == (4, 2), row["reason"]
    for seed in range(4):
        x = np.random.default_rng(seed).uniform(0, 4, size=(1, 16, 2, 2)).astype(np.float32)
        np.testing.assert_array_equal(art.run(x), _qonnx_run(model, x))


def _grouped_conv(groups: int):
    """A 4-bit input with one (not power-of-two) scale per channel → grouped conv."""
    rng = np.random.default_rng(2)
    s_x = rng.uniform(0.05, 0.3, size=(1, 6, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("s_x", s_x), ("z0", np.float32(0)), ("b4", np.float32(4)),
        ("w", rng.normal(size=(12, 6 // groups, 3, 3)).astype(np.float32)),
        ("s_w", rng.uniform(0.1, 0.5, size=(12, 1, 1, 1)).astype(np.float32)),
        ("s_y", np.float32(0.37)), ("b3", np.float32(3))]]
    nodes = [
        helper.make_node("Quant", ["x", "s_x", "z0", "b4"], ["xq"], domain=DOMAIN, name="actq",
                         signed=0, narrow=0),
        helper.make_node("Quant", ["w", "s_w", "z0", "b3"], ["wq"], domain=DOMAIN, name="wq",
                         signed=1, narrow=1),
        helper.make_node("Conv", ["xq", "wq"], ["c"], name="dwconv", group=groups,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Quant", ["r", "s_y", "z0", "b4"], ["y"], domain=DOMAIN, name="outq",
                         signed=0, narrow=0)]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 6, 5, 5])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 12, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid(DOMAIN, 1)])


def test_per_channel_activation_scales_fold_into_a_depthwise_conv():
    # Brevitas' MobileNet: a depthwise conv's 4-bit input has one scale per channel; each
    # output channel reads one input channel, so its scale multiplies the layer's.
    model = _grouped_conv(groups=6)
    art = tvm_qnn.compile(model)
    (row,) = art.layers
    assert row["bitserial"], row["reason"]
    same = []
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(0, 4, size=(1, 6, 5, 5)).astype(np.float32)
        got, want = art.run(x), _qonnx_run(model, x)
        # The scales are not powers of two: qonnx's float conv rounds its sums, the
        # accumulator here is exact, so an output may land one code (0.37) apart.
        assert np.abs(got - want).max() <= np.float32(0.37) * 1.0001
        same.append(np.mean(got == want))
    assert min(same) > 0.99


def test_an_activation_scale_varying_within_a_group_is_named():
    (row,) = tvm_qnn.compile(_grouped_conv(groups=3)).layers
    assert not row["bitserial"]
    assert row["reason"] == "activation scale varies within a conv group"
