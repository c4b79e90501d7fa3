# SPDX-License-Identifier: Apache-2.0
"""LegalizeQuantize: relax.quantize lowered with ONNX's round-half-to-even."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_qnn.transform import LegalizeQuantize


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((12,), "float32")):
        with R.dataflow():
            q = R.quantize(x, R.const(0.5, "float32"), R.const(3, "int8"), axis=0,
                           out_dtype="int8")
            R.output(q)
        return q


@I.ir_module
class Expected:
    @T.prim_func(private=True, s_tir=True)
    def quantize(x: T.Buffer((T.int64(12),), "float32"),
                 quantize: T.Buffer((T.int64(12),), "int8")):
        T.func_attr({"tirx.noalias": True})
        for i0 in range(T.int64(12)):
            with T.sblock("quantize"):
                v_i0 = T.axis.spatial(T.int64(12), i0)
                T.reads(x[v_i0])
                T.writes(quantize[v_i0])
                # nearbyint: round half to even (ONNX), not relax's half away from zero
                quantize[v_i0] = T.Cast("int8", T.max(T.min(
                    T.nearbyint(x[v_i0] / T.float32(0.5)) + T.float32(3.0), T.float32(127.0)),
                    T.float32(-128.0)))

    @R.function
    def main(x: R.Tensor((12,), "float32")) -> R.Tensor((12,), "int8"):
        cls = Expected
        with R.dataflow():
            q = R.call_tir(cls.quantize, (x,), out_ty=R.Tensor((12,), "int8"))
            R.output(q)
        return q


def test_structure():
    tvm.ir.assert_structural_equal(LegalizeQuantize()(Before), Expected)


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
