# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.compile``: import → rewrite to bit-serial → legalize → schedule → build."""

from __future__ import annotations

import logging
import os

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from .errors import UnsupportedModelError
from .frontend import load_model
from .runtime import Artifact, TensorInfo
from .target import resolve_target
from .transform import LegalizeQuantize, RewriteBitserial, ScheduleBitserial, find_layers
from .tuning.database import open_database

logger = logging.getLogger("tvm_qnn")


def _before_scheduling(backend, offload=None) -> list[tvm.transform.Pass]:
    target = backend.tvm_target
    # RewriteBitserial before any constant folding: FoldConstant would turn the quantized
    # weight chains into plain float constants. An accelerator takes its layers first.
    return (cpu_pipeline.library_dispatch_passes(target)
            + ([offload] if offload is not None else [])
            + [RewriteBitserial(backend.oc_block, backend.word_bits,
                                backend.integer_min_branches,
                                backend.single_branch_oc_block), LegalizeQuantize()]
            + cpu_pipeline.legalize_passes(target)[1:])  # TVM's LegalizeOps is done above


def build_pipeline(backend, database=None, offload=None,
                   pretuned: str | None = None) -> tvm.transform.Pass:
    """The Relax pipeline of tvm_qnn for ``backend`` (TVM's CPU pipeline plus our passes).

    ``database``: tuning records (:func:`tvm_qnn.tune`) that override the default templates.
    ``offload``: the backend's :meth:`~tvm_qnn.target.QnnTarget.offload_pass`, if any.
    ``pretuned``: a folder of pre-tuned records (:mod:`tvm_qnn.tuning.pretuned`).
    """
    target = backend.tvm_target

    @tvm.transform.module_pass(opt_level=0, name="TvmQnnPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                _before_scheduling(backend, offload)
                + [ScheduleBitserial(backend, database, pretuned)]
                + cpu_pipeline.dataflow_lower_passes(target)
                + cpu_pipeline.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline


def lower_for_tuning(mod: tvm.IRModule, backend) -> tvm.IRModule:
    """``mod`` as the pipeline hands it to the schedules: the tuning tasks live here."""
    with backend.tvm_target:
        return tvm.transform.Sequential(_before_scheduling(backend))(mod)


def layer_report(mod: tvm.IRModule, integer_min_branches: int | None = None) -> list[dict]:
    """One dict per conv2d/matmul of ``main``: name, kind, bitserial, bits, MACs, reason.

    ``bitserial`` is True for a layer tvm_qnn rewrites (else ``reason`` says why not);
    ``kernel`` says how it runs: ``bit-serial``, or ``integer`` for a conv with at least
    ``integer_min_branches`` branches (the target's choice, e.g. an 8-bit first layer).
    """
    rows = []
    for m in find_layers(mod["main"]):
        row = {"name": m.name, "kind": m.kind, "bitserial": m.layer is not None, "macs": m.macs}
        if m.layer is not None:
            from .topi.layer import plan_layer

            plan = plan_layer(m.layer, integer_min_branches=integer_min_branches)
            row.update(act_bits=m.layer.act_bits, weight_bits=plan.weight_bits,
                       kernel="integer" if plan.conv_layout == "integer" else "bit-serial",
                       packed_weight_bytes=int(plan.packed_weight.nbytes))
        else:
            row["reason"] = m.reason
        rows.append(row)
    return rows


def compile(model, target="x86", *, shapes: dict | None = None,  # noqa: A001
            example_inputs=None, strict: bool = False, tuning_db=None) -> Artifact:
    """Compile a quantized model into multi-branch bit-serial code.

    Parameters
    ----------
    model : onnx.ModelProto, str, os.PathLike, torch model or tvm.IRModule
        A quantized ONNX model (QDQ, QCDQ, int4 QDQ, QOperator, QONNX), its path, a
        ``tvm_qnn.nn`` model (``nn.Module`` with ``example_inputs``, or a
        ``torch.export.ExportedProgram`` of ``tvm_qnn.nn.freeze(model)``), or a Relax module.
    target : str, dict, tvm.target.Target or QnnTarget
        ``"x86"`` (this host: AVX-512 VPOPCNTDQ if present, else AVX2), ``"arm_cpu[:board]"``,
        ``"accel[:config.json]"`` (the simulated bit-serial accelerator, host x86), a TVM
        target or dict.
    shapes : dict, optional
        Static shapes for inputs with symbolic dimensions.
    example_inputs : tuple of torch.Tensor, optional
        Inputs to trace an ``nn.Module`` with (``torch.export``).
    strict : bool
        Raise :class:`UnsupportedModelError` (naming the layer and the reason) when a
        conv2d/dense cannot be made bit-serial, instead of compiling it as TVM would.
    tuning_db : Database or path, optional
        Tuning records (:func:`tvm_qnn.tune`) for the CPU kernels, or for ``"accel"`` the
        folder of its tuned tilings. Without it, the pre-tuned schedules shipped for this
        device (or its class) are used when there are some (``schedules/``, TopHub-style;
        ``TVM_QNN_SCHEDULES=off`` turns that off).

    Returns
    -------
    Artifact
        ``run``, ``benchmark``, ``export_library`` (``profile`` for the accelerator);
        ``layers`` tells which layers went bit-serial (and, for the accelerator, which ran
        there) and why the others did not.
    """
    backend = resolve_target(target)
    mod = load_model(model, shapes, example_inputs)
    report = layer_report(mod, backend.integer_min_branches)
    for row in report:
        if row["bitserial"]:
            logger.info("%s: %s %s W%dA%d", row["name"], row["kind"], row["kernel"],
                        row["weight_bits"], row["act_bits"])
        elif strict:
            raise UnsupportedModelError(f"layer '{row['name']}' ({row['kind']}) cannot be made "
                                        f"bit-serial: {row['reason']}")
        else:
            logger.info("%s: %s left as is (%s)", row["name"], row["kind"], row["reason"])
    params = mod["main"].params
    inputs = [TensorInfo(p.name, tuple(int(s) for s in p.ty.shape.values), str(p.ty.dtype))
              for p in params]
    logger.info("compiling for %s", backend.describe())
    from .tuning.accel import find_tilings

    tilings, where = find_tilings(backend, tuning_db)
    if tilings:
        logger.info("accelerator tilings: %s", where)
    # A folder of accelerator tilings only (tune(model, "accel")) has no CPU records.
    cpu_db = tuning_db is not None and not (
        tilings and isinstance(tuning_db, (str, os.PathLike)) and not os.path.isfile(
            os.path.join(os.fspath(tuning_db), "database_tuning_record.json")))
    database = open_database(tuning_db) if cpu_db else None
    pretuned = None
    if database is None:
        from .tuning.pretuned import find_pretuned

        found = find_pretuned(backend)
        if found is None:
            keys = ", ".join(k for k, _ in backend.schedule_keys()) or "this target"
            logger.info("no pre-tuned schedules for %s: default templates", keys)
        else:
            pretuned, key, level = found
            logger.info("pre-tuned schedules: %s (%s %s)", pretuned, level, key)
    offload = backend.offload_pass(tilings)
    exe = tvm.compile(mod, backend.tvm_target,
                      relax_pipeline=build_pipeline(backend, database, offload, pretuned))
    accel_layers = None
    if offload is not None:
        accel_layers = offload.layers
        for row in report:
            if row["name"] in offload.layers:
                row["device"] = "accel"
            elif row["bitserial"]:
                row.update(device="cpu", offload_reason=offload.reasons.get(row["name"], ""))
    return Artifact(exe, inputs, backend.describe(), report, backend=backend,
                    accel_layers=accel_layers)


__all__ = ["build_pipeline", "compile", "layer_report", "lower_for_tuning"]
