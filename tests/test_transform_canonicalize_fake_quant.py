# SPDX-License-Identifier: Apache-2.0
"""CanonicalizeFakeQuant: PyTorch's fake-quantization arithmetic becomes quantize / clip /
dequantize, the spelling the layer matcher reads."""

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import CanonicalizeFakeQuant


def test_canonicalize_fake_quant_structure():
    w = np.arange(-4, 4, dtype="float32").reshape(2, 1, 2, 2)

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 1, 3, 3), "float32")):
            with R.dataflow():
                d = R.divide(x, R.const(0.5, "float32"))
                r = R.round(d)
                c = R.clip(r, 0, 3)
                y = R.nn.conv2d(c, R.const(w))
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 1, 3, 3), "float32")):
            with R.dataflow():
                q = R.quantize(x, R.const(0.5, "float32"), R.const(0, "uint8"), axis=-1,
                               out_dtype="uint8")
                c = R.clip(q, 0, 3)
                dq = R.dequantize(c, R.const(1.0, "float32"), R.const(0, "uint8"), axis=-1,
                                  out_dtype="float32")
                wd = R.dequantize(R.const(w.astype("int8")), R.const(1.0, "float32"),
                                  R.const(0, "int8"), axis=0, out_dtype="float32")
                y = R.nn.conv2d(dq, wd)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(CanonicalizeFakeQuant()(Before), Expected)
