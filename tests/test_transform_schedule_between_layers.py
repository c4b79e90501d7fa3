# SPDX-License-Identifier: Apache-2.0
"""ScheduleBetweenLayers: the ops TVM legalized around the layers get a default schedule (over
the cores, a float conv tiled), the layer kernels are left alone, and no float changes."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_qnn.target import resolve_target
from tvm_qnn.target.cpu.between_layers import schedule_between_layers
from tvm_qnn.transform import ScheduleBetweenLayers


@I.ir_module
class Before:
    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((128, 256), "float32"), y: T.Buffer((128, 256), "float32")):
        T.func_attr({"tvm_qnn.kernel": "dense", "tvm_qnn.layer": "fc"})
        for i, j in T.grid(128, 256):
            with T.sblock("epilogue"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * T.float32(2)

    @T.prim_func(private=True, s_tir=True)
    def scale(x: T.Buffer((128, 256), "float32"), y: T.Buffer((128, 256), "float32")):
        for i, j in T.grid(128, 256):
            with T.sblock("scale"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] * T.float32(0.5)

    @R.function
    def main(x: R.Tensor((128, 256), "float32")) -> R.Tensor((128, 256), "float32"):
        cls = Before
        with R.dataflow():
            a = R.call_tir(cls.kernel, (x,), out_ty=R.Tensor((128, 256), "float32"))
            b = R.call_tir(cls.scale, (a,), out_ty=R.Tensor((128, 256), "float32"))
            R.output(b)
        return b


@I.ir_module
class Expected:
    @T.prim_func(private=True, s_tir=True)
    def kernel(x: T.Buffer((128, 256), "float32"), y: T.Buffer((128, 256), "float32")):
        T.func_attr({"tvm_qnn.kernel": "dense", "tvm_qnn.layer": "fc"})
        for i, j in T.grid(128, 256):
            with T.sblock("epilogue"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(x[vi, vj])
                T.writes(y[vi, vj])
                y[vi, vj] = x[vi, vj] * T.float32(2)

    @T.prim_func(private=True, s_tir=True)
    def scale(x: T.Buffer((128, 256), "float32"), y: T.Buffer((128, 256), "float32")):
        T.func_attr({"tvm_qnn.scheduled": True})
        for i in T.parallel(128):
            for j in range(256):
                with T.sblock("scale"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    T.reads(x[vi, vj])
                    T.writes(y[vi, vj])
                    y[vi, vj] = x[vi, vj] * T.float32(0.5)

    @R.function
    def main(x: R.Tensor((128, 256), "float32")) -> R.Tensor((128, 256), "float32"):
        cls = Expected
        with R.dataflow():
            a = R.call_tir(cls.kernel, (x,), out_ty=R.Tensor((128, 256), "float32"))
            b = R.call_tir(cls.scale, (a,), out_ty=R.Tensor((128, 256), "float32"))
            R.output(b)
        return b


def test_ops_between_layers_run_over_the_cores_and_kernels_are_left_alone():
    after = ScheduleBetweenLayers(lambda f: schedule_between_layers(f))(Before)
    tvm.ir.assert_structural_equal(after, Expected)


def test_a_function_the_target_leaves_is_not_marked():
    after = ScheduleBetweenLayers(lambda f: None)(Before)
    assert "tvm_qnn.scheduled" not in (after["scale"].attrs or {})


def _float_conv_module(strides):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 64, 64), "float32"))
    w = np.random.default_rng(0).normal(size=(16, 3, 3, 3)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=strides,
                                           padding=[1, 1, 1, 1]))
            r = bb.emit(relax.op.nn.relu(relax.op.add(c, relax.const(0.25, "float32"))))
            out = bb.emit_output(r)
        bb.emit_func_output(out)
    return bb.get()


def test_a_float_conv_is_tiled_and_gives_the_same_floats():
    """The first conv of an image model: tiled in registers, over the cores, every output
    summed in the legalized order, so the floats equal TVM's own unscheduled build."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

    from tvm_qnn.pipeline import build_pipeline

    target = resolve_target("x86")
    x = np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype("float32")
    for strides in ([1, 1], [2, 2]):
        mod = _float_conv_module(strides)
        lowered = build_pipeline(target)(mod)
        convs = [f for _, f in lowered.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in f.script()]
        assert convs and all("T.parallel" in f.script() and "T.vectorized" in f.script()
                             for f in convs)
        got = relax.VirtualMachine(tvm.compile(mod, target.tvm_target,
                                               relax_pipeline=build_pipeline(target)),
                                   tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        plain = relax.VirtualMachine(tvm.compile(
            mod, target.tvm_target,
            relax_pipeline=cpu_pipeline.get_default_pipeline(target.tvm_target)),
            tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_array_equal(got, plain)
