# SPDX-License-Identifier: Apache-2.0
"""FunctionFacts: bindings and uses, constants evaluated with ONNX semantics, code ranges."""

import numpy as np
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform.graph_facts import FunctionFacts, op_name

WF = np.array([[0.5, 1.5, 2.5, -0.5], [-2.5, 0.25, 3.0, 9.0]], "float32")


@I.ir_module
class Module:
    @R.function
    def main(x: R.Tensor((2, 4), "uint8")):
        with R.dataflow():
            q = R.quantize(R.const(WF), R.const(1.0, "float32"), R.const(0, "int8"), axis=0,
                           out_dtype="int8")
            w = R.clip(q, -2, 2)
            xc = R.clip(x, 1, 6)
            xs = R.astype(xc, "int32")
            ws = R.astype(w, "int32")
            y = R.add(xs, ws)
            z = R.multiply(y, y)
            R.output(z)
        return z


def _facts():
    facts = FunctionFacts(Module["main"])
    return facts, {v.name: v for v in facts.order}


def test_bindings_in_order_and_their_users():
    facts, var = _facts()
    assert [v.name for v in facts.order] == ["q", "w", "xc", "xs", "ws", "y", "z"]
    assert op_name(facts.bindings[var["w"]]) == "relax.clip"
    assert facts.single_user(var["xc"]).same_as(var["xs"])
    assert facts.single_user(var["y"]) is None  # used twice, by z
    assert facts.single_user(var["z"]) is None  # returned, not bound
    assert facts.value_of(var["xs"]).same_as(facts.bindings[var["xs"]])


def test_constant_chains_are_evaluated_with_onnx_rounding():
    facts, var = _facts()
    # QuantizeLinear rounds half to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2), saturates
    # to int8, then the clip bounds the codes.
    np.testing.assert_array_equal(facts.constant(var["q"]),
                                  [[0, 2, 2, 0], [-2, 0, 3, 9]])
    np.testing.assert_array_equal(facts.constant(var["w"]), [[0, 2, 2, 0], [-2, 0, 2, 2]])
    assert facts.constant(var["w"]).dtype == np.int8
    assert facts.constant(var["y"]) is None  # depends on the input


def test_code_ranges_come_from_clips_and_dtypes():
    facts, var = _facts()
    assert facts.code_range(var["xc"]) == (1, 6)
    assert facts.code_range(Module["main"].params[0]) == (0, 255)
    assert facts.code_range(var["w"]) == (-2, 2)
    # A cast of codes that fit the new type keeps their range (the Trunc codes of QONNX).
    assert facts.code_range(var["xs"]) == (1, 6)
