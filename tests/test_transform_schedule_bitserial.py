# SPDX-License-Identifier: Apache-2.0
"""ScheduleBitserial: layer kernels get the caller's schedule, everything else is left alone."""

import tvm
from tvm import s_tir
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_qnn.transform import ScheduleBitserial


@I.ir_module
class Before:
    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((64,), "int32"), y: T.Buffer((64,), "int32")):
        T.func_attr({"tvm_qnn.kernel": "dense", "tvm_qnn.layer": "fc"})
        for i in range(64):
            with T.sblock("epilogue"):
                vi = T.axis.spatial(64, i)
                y[vi] = x[vi] * 2

    @T.prim_func(private=True, s_tir=True)
    def other(x: T.Buffer((64,), "int32"), y: T.Buffer((64,), "int32")):
        for i in range(64):
            with T.sblock("copy"):
                vi = T.axis.spatial(64, i)
                y[vi] = x[vi]

    @R.function
    def main(x: R.Tensor((64,), "int32")) -> R.Tensor((64,), "int32"):
        cls = Before
        with R.dataflow():
            a = R.call_tir(cls.kernel, (x,), out_ty=R.Tensor((64,), "int32"))
            b = R.call_tir(cls.other, (a,), out_ty=R.Tensor((64,), "int32"))
            R.output(b)
        return b


@I.ir_module
class Expected:
    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((64,), "int32"), y: T.Buffer((64,), "int32")):
        T.func_attr({"tvm_qnn.kernel": "dense", "tvm_qnn.layer": "fc",
                     "tvm_qnn.scheduled": True})
        for i_0, i_1 in T.grid(8, 8):
            with T.sblock("epilogue"):
                vi = T.axis.spatial(64, i_0 * 8 + i_1)
                T.reads(x[vi])
                T.writes(y[vi])
                y[vi] = x[vi] * 2

    @T.prim_func(private=True, s_tir=True)
    def other(x: T.Buffer((64,), "int32"), y: T.Buffer((64,), "int32")):
        for i in range(64):
            with T.sblock("copy"):
                vi = T.axis.spatial(64, i)
                T.reads(x[vi])
                T.writes(y[vi])
                y[vi] = x[vi]

    @R.function
    def main(x: R.Tensor((64,), "int32")) -> R.Tensor((64,), "int32"):
        cls = Expected
        with R.dataflow():
            a = R.call_tir(cls.kernel, (x,), out_ty=R.Tensor((64,), "int32"))
            b = R.call_tir(cls.other, (a,), out_ty=R.Tensor((64,), "int32"))
            R.output(b)
        return b


class _SplitBy8:
    """A schedule callable that splits the epilogue loop by 8 and records its calls."""

    def __init__(self):
        self.kinds = []

    def __call__(self, kind, func):
        self.kinds.append(kind)
        sch = s_tir.Schedule(func)
        (loop,) = sch.get_loops(sch.get_sblock("epilogue"))
        sch.split(loop, [None, 8])
        return sch.mod["main"]


def test_kernels_get_the_callers_schedule_and_keep_their_attributes():
    schedule = _SplitBy8()
    after = ScheduleBitserial(schedule)(Before)
    tvm.ir.assert_structural_equal(after, Expected)
    assert schedule.kinds == ["dense"]  # the kernel only, with its kind


def test_scheduled_kernels_are_not_scheduled_again():
    schedule = _SplitBy8()
    after = ScheduleBitserial(schedule)(Expected)
    tvm.ir.assert_structural_equal(after, Expected)
    assert schedule.kinds == []
