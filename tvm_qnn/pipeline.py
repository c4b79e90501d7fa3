# SPDX-License-Identifier: Apache-2.0
"""The Relax pipeline of tvm_qnn for a target: TVM's CPU pipeline with our passes in it.

    [offload] → RewriteBitserial(layout) → LegalizeQuantize → TVM legalize → ScheduleBitserial
    → ScheduleBetweenLayers → TVM dataflow lowering → TVM finalize

The target supplies the layout, the offload pass (an accelerator's) and the default schedule;
``compile`` supplies the schedule of each kernel (tuned, pre-tuned or default) and the tuner
lowers models with :func:`lower_for_tuning` to find its tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from .topi.attrs import KERNEL_ATTR
from .topi.dense_dot8 import plan_kernel
from .topi.layout import KernelChoice, Layout
from .transform import (
    LegalizeQuantize,
    RewriteBitserial,
    ScheduleBetweenLayers,
    ScheduleBitserial,
    find_layers,
)
from .transform.rewrite_bitserial import layer_layout
from .transform.schedule_bitserial import ScheduleFn


def _before_scheduling(qnn_target, offload=None, layout: Layout | None = None,
                       families=None) -> list[tvm.transform.Pass]:
    target = qnn_target.tvm_target
    # RewriteBitserial before any constant folding: FoldConstant would turn the quantized
    # weight chains into plain float constants. An accelerator takes its layers first.
    return (cpu_pipeline.library_dispatch_passes(target)
            + ([offload] if offload is not None else [])
            + [RewriteBitserial(layout or qnn_target.layout, families)]
            + qnn_target.between_layer_passes()  # on Relax ops: before they are legalized
            + [LegalizeQuantize()]
            + cpu_pipeline.legalize_passes(target)[1:])  # TVM's LegalizeOps is done above


def build_pipeline(qnn_target, schedule: ScheduleFn | None = None,
                   offload: tvm.transform.Pass | None = None,
                   families: Mapping[str, KernelChoice] | None = None,
                   kernels_out: dict | None = None) -> tvm.transform.Pass:
    """The Relax pipeline of tvm_qnn for the target ``qnn_target``.

    ``schedule``: ``schedule(kind, func)`` for each layer kernel (default: the target's
    template; ``compile`` passes :class:`~tvm_qnn.tuning.KernelSchedules`). ``offload``: the
    pass of the target's :class:`~tvm_qnn.target.Offload`, if any. ``families``: the kernel
    family tuning chose per layer (:class:`~tvm_qnn.transform.RewriteBitserial`).
    ``kernels_out``: filled with the scheduled layer kernels, symbol -> PrimFunc (what
    ``Artifact.profile(split=True)`` takes apart).
    """
    target = qnn_target.tvm_target
    schedule = schedule or qnn_target.schedule

    @tvm.transform.module_pass(opt_level=0, name="TvmQnnPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                _before_scheduling(qnn_target, offload, families=families)
                + [ScheduleBitserial(schedule),
                   ScheduleBetweenLayers(qnn_target.schedule_between)]
                + cpu_pipeline.dataflow_lower_passes(target)
                + cpu_pipeline.finalize_passes(target)
            )
            mod = seq(mod)
        if kernels_out is not None:
            kernels_out.update({gv.name_hint: func for gv, func in mod.functions.items()
                                if isinstance(func, tvm.tirx.PrimFunc) and func.attrs
                                and KERNEL_ATTR in func.attrs})
        return mod

    return _pipeline


def lower_for_tuning(mod: tvm.IRModule, qnn_target, layout: Layout | None = None,
                     families: Mapping[str, KernelChoice] | None = None) -> tvm.IRModule:
    """``mod`` as the pipeline hands it to the schedules: the tuning tasks live here.

    ``layout`` replaces the target's (e.g. ``layout.with_family("int8-dot")``: every layer
    that fits the dot kernel on it); ``families`` as for :func:`build_pipeline`."""
    with qnn_target.tvm_target:
        return tvm.transform.Sequential(_before_scheduling(
            qnn_target, layout=layout, families=families))(mod)


def layer_report(mod: tvm.IRModule, layout: Layout = Layout(),
                 families: Mapping[str, KernelChoice] | None = None) -> list[dict]:
    """One dict per conv2d/matmul of ``main``: name, kind, bitserial, bits, MACs, reason.

    ``bitserial`` is True for a layer tvm_qnn rewrites (else ``reason`` says why not);
    ``kernel`` says how it runs with the target's ``layout``: ``bit-serial``, ``int8-dot``
    (byte dot products, where the target's cost model or tuning says they are faster), or
    ``integer`` for a conv with at least ``layout.integer_min_branches`` branches (e.g. an
    8-bit first layer); ``kernel_choice`` says who chose it (the cost model, or what tuning
    measured: ``families``); ``packed_weight_bytes`` is the size of its weights.
    """
    families = families or {}
    rows = []
    for m in find_layers(mod["main"]):
        row = {"name": m.name, "kind": m.kind, "bitserial": m.layer is not None, "macs": m.macs}
        if m.layer is not None:
            chosen = layer_layout(layout, families, m.name, m.layer)
            plan = plan_kernel(m.layer, chosen)
            row.update(act_bits=m.layer.act_bits, weight_bits=plan.weight_bits,
                       kernel=plan.kernel,
                       kernel_choice=families[m.layer.signature].why if chosen is not layout
                       else "cost model",
                       packed_weight_bytes=int(plan.packed_weight.nbytes))
        else:
            row["reason"] = m.reason
        rows.append(row)
    return rows


__all__ = ["build_pipeline", "layer_report", "lower_for_tuning"]
