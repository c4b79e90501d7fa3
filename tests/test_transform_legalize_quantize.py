# SPDX-License-Identifier: Apache-2.0
"""LegalizeQuantize: relax.quantize lowered with ONNX's round-half-to-even."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import LegalizeQuantize, quantize_half_even


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((12,), "float32")):
        with R.dataflow():
            q = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=0,
                           out_dtype="int8")
            R.output(q)
        return q


def test_structure():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((12,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            q = bb.call_te(quantize_half_even, x, tvm.tirx.FloatImm("float32", 0.5),
                           tvm.tirx.IntImm("int8", 3), 0, "int8", primfunc_name_hint="quantize")
            out = bb.emit_output(q, name_hint="q")
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(LegalizeQuantize()(Before), bb.get())


def test_ties_round_to_even_and_saturate():
    # x / 0.5 lands exactly on .5 for these, where half-away-from-zero would differ.
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 1.0, 0.0, 70.0, -70.0, 0.2, -0.3],
                 "float32")
    exe = tvm.compile(LegalizeQuantize()(Before), tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = np.clip(np.rint(x / np.float32(0.5)) + 3, -128, 127).astype("int8")
    np.testing.assert_array_equal(got, want)
    assert got[0] == 3 and got[1] == 5  # 0.5 → 0, 1.5 → 2 (even), then + 3
