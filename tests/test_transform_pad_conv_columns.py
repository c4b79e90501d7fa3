# SPDX-License-Identifier: Apache-2.0
"""PadConvColumns: a float conv of a ragged output width computes a few more columns and
slices the real ones back, bit for bit the same floats."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_qnn.transform import PadConvColumns
from tvm_qnn.transform.pad_conv_columns import padded_width

W = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype("float32")


@pytest.mark.parametrize("width,wider", [(111, 112), (112, 112), (55, 55), (13, 13), (7, 7),
                                         (57, 60), (53, 54), (37, 39), (5, 5)])
def test_a_ragged_width_grows_to_the_next_that_splits(width, wider):
    """Widths with a divisor of 8-16 stay (55 = 5 x 11, 13); others grow to the next width
    that has one, by at most 1/16 of the width (7 would need 8, 5 would need 8: too much)."""
    assert padded_width(width, (8, 16), 1 / 16) == wider


def test_an_unpadded_stride_2_conv_on_224_columns_computes_112():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 3, 224, 224), "float32")):
            with R.dataflow():
                y = R.nn.conv2d(x, R.const(W), strides=[2, 2])
                R.output(y)
            return y

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 224, 224), "float32")):
            with R.dataflow():
                wide = R.nn.conv2d(x, R.const(W), strides=[2, 2], padding=[0, 0, 0, 2],
                                   out_dtype="float32")
                y = R.strided_slice(wide, axes=[3], begin=[0], end=[111])
                R.output(y)
            return y

    after = PadConvColumns()(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype("float32")
    got, want = (relax.VirtualMachine(tvm.compile(m, "llvm"), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy() for m in (after, Before))
    assert got.shape == want.shape == (1, 8, 111, 111)
    np.testing.assert_array_equal(got, want)
