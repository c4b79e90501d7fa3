# SPDX-License-Identifier: Apache-2.0
"""OffloadAccel: the layers it is given become an accelerator call and a host epilogue."""

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_qnn.topi.layer import QuantizedLayer, plan_layer
from tvm_qnn.topi.requantize import Requantize
from tvm_qnn.transform import OffloadAccel, OffloadedLayer

# A W1A1 dense layer (16 bipolar weight rows over 64 one-bit codes, float output). On the host
# its epilogue needs 2·acc = 2·Uw - 2·P only: Uw, the +1 count of each weight row, is derived
# here from the math (DESIGN.md §1).
W = np.where(np.random.default_rng(3).random((16, 64)) < 0.5, -1, 1).astype("int8")
CONST2 = (2 * (W == 1).sum(axis=1)).astype("int32")
LAYER = QuantizedLayer(
    kind="dense", name="y", input_shape=(1, 64), weight=W.astype(np.int64),
    weight_scale=np.full(16, 0.25, "float32"), weight_zero_point=np.zeros(16, np.int64),
    act_scale=0.5, act_zero_point=0, act_lo=0, act_bits=1, input_dtype="uint8",
    output=Requantize(np.zeros(16, "float32")))


@I.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((1, 64), "uint8")):
        with R.dataflow():
            xc = R.clip(x, 0, 1)
            xd = R.dequantize(xc, R.const(0.5, "float32"), R.const(0, "uint8"), axis=1)
            wd = R.dequantize(R.const(W), R.const(0.25, "float32"), R.const(0, "int8"), axis=0)
            wt = R.permute_dims(wd)
            y = R.matmul(xd, wt)
            R.output(y)
        return y


@I.ir_module
class Expected:
    @T.prim_func(private=True, s_tir=True)
    def accel_epilogue(lv: T.Buffer((T.int64(1), T.int64(1), T.int64(16)), "int8"),
                       xc: T.Buffer((T.int64(1), T.int64(64)), "uint8"),
                       C: T.Buffer((T.int64(16),), "int32"),
                       epilogue: T.Buffer((T.int64(1), T.int64(16)), "float32")):
        T.func_attr({"tirx.noalias": True, "tvm_qnn.layer": "y"})
        for r, oc in T.grid(T.int64(1), T.int64(16)):
            with T.sblock("epilogue"):
                v_r, v_oc = T.axis.remap("SS", [r, oc])
                T.reads(C[v_oc], lv[v_r, v_oc // T.int64(16), v_oc % T.int64(16)])
                T.writes(epilogue[v_r, v_oc])
                epilogue[v_r, v_oc] = T.call_llvm_pure_intrin(
                    "float32", "llvm.arithmetic.fence",
                    T.Cast("float32", C[v_oc] - T.Cast(
                        "int32", lv[v_r, v_oc // T.int64(16), v_oc % T.int64(16)]) * 2 >> 1)
                    * T.float32(0.125))

    @R.function
    def main(x: R.Tensor((1, 64), "uint8")) -> R.Tensor((1, 16), "float32"):
        cls = Expected
        with R.dataflow():
            xc = R.clip(x, 0, 1)
            # Left for the CPU rewrite's dead-code elimination, which runs right after.
            xd = R.dequantize(xc, R.const(0.5, "float32"), R.const(0, "uint8"), axis=1)  # noqa: F841
            wd = R.dequantize(R.const(W), R.const(0.25, "float32"), R.const(0, "int8"), axis=0)
            wt = R.permute_dims(wd)  # noqa: F841
            lv = R.call_dps_packed("test.accel.y", (xc,), out_ty=R.Tensor((1, 1, 16), "int8"))
            y = R.call_tir(cls.accel_epilogue, (lv, xc, R.const(CONST2)),
                           out_ty=R.Tensor((1, 16), "float32"))
            R.output(y)
        return y


def test_named_layer_becomes_an_accelerator_call_and_a_host_epilogue():
    layers = {"y": OffloadedLayer(plan_layer(LAYER), "test.accel.y", (1, 1, 16), "int8")}
    tvm.ir.assert_structural_equal(OffloadAccel(layers)(Before), Expected)


def test_layers_not_named_stay_as_they_are():
    tvm.ir.assert_structural_equal(OffloadAccel({})(Before), Before)
