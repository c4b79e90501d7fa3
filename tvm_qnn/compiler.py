# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.compile`` and ``tvm_qnn.load``: the two ways to get an :class:`Artifact`.

compile: import → decide what an accelerator runs → rewrite to bit-serial → legalize →
schedule (tuned, pre-tuned or default) → build.
"""

from __future__ import annotations

import logging
import os

import tvm

from .errors import LibraryFileError, UnsupportedModelError
from .frontend import load_model
from .pipeline import build_pipeline, layer_report
from .runtime import Artifact, TensorInfo
from .runtime.artifact import read_sidecar
from .runtime.threads import default_threads
from .target import resolve_target
from .tuning.families import read_kernel_families
from .tuning.schedules import KernelSchedules, has_records

logger = logging.getLogger("tvm_qnn")


def _log_report(report: list[dict], strict: bool) -> None:
    for row in report:
        if row["bitserial"]:
            logger.info("%s: %s %s W%dA%d (%s)", row["name"], row["kind"], row["kernel"],
                        row["weight_bits"], row["act_bits"], row["kernel_choice"])
        elif strict:
            raise UnsupportedModelError(f"layer '{row['name']}' ({row['kind']}) cannot be made "
                                        f"bit-serial: {row['reason']}")
        else:
            logger.info("%s: %s left as is (%s)", row["name"], row["kind"], row["reason"])


def compile(model, target="x86", *, shapes: dict | None = None,  # noqa: A001
            example_inputs=None, strict: bool = False, tuning_db=None,
            threads: int | None = None) -> Artifact:
    """Compile a quantized model into multi-branch bit-serial code.

    Parameters
    ----------
    model : onnx.ModelProto, str, os.PathLike, torch model or tvm.IRModule
        A quantized ONNX model (QDQ, QCDQ, int4 QDQ, QOperator, QONNX), its path, a
        ``tvm_qnn.nn`` model (``nn.Module`` with ``example_inputs``, or a
        ``torch.export.ExportedProgram`` of ``tvm_qnn.nn.freeze(model)``), a Brevitas
        ``nn.Module`` with ``example_inputs`` (compiled through Brevitas' QONNX export), or a
        Relax module.
    target : str, dict, tvm.target.Target or QnnTarget
        ``"x86"`` (this host: AVX-512 VPOPCNTDQ if present, else AVX2), ``"x86:<mcpu>"``,
        ``"arm_cpu[:board]"``, ``"accel[:config.json]"`` (the simulated bit-serial
        accelerator, host x86), a TVM target or dict.
    shapes : dict, optional
        Static shapes for inputs with symbolic dimensions.
    example_inputs : tuple of torch.Tensor, optional
        Inputs to trace an ``nn.Module`` with (``torch.export``, or Brevitas' QONNX export).
    strict : bool
        Raise :class:`UnsupportedModelError` (naming the layer and the reason) when a
        conv2d/dense cannot be made bit-serial, instead of compiling it as TVM would.
    tuning_db : Database or path, optional
        Tuning records (:func:`tvm_qnn.tune`) for the CPU kernels, or for ``"accel"`` the
        folder of its tuned tilings. A folder also gives each layer the kernel family tuning
        measured fastest for it (``art.layers[i]["kernel_choice"]`` says so). Without it,
        the pre-tuned schedules shipped for this device (or its class) are used when there
        are some (``schedules/``, TopHub-style; ``TVM_QNN_SCHEDULES=off`` turns that off).
    threads : int, optional
        Threads the artifact runs on (stored with an exported library). Default:
        ``TVM_NUM_THREADS`` when set, else this machine's physical cores. The code is made
        for it: with several, smaller layers run parallel too; with one, they stay serial
        (``run(threads=)`` can still change the count, the code stays as compiled).

    Returns
    -------
    Artifact
        ``run``, ``benchmark``, ``export_library`` (``profile`` for the accelerator);
        ``layers`` tells which layers went bit-serial (and, for the accelerator, which ran
        there) and why the others did not.
    """
    # The code depends on the threads it runs on: small layers go parallel only for several.
    qnn_target = resolve_target(target).for_threads(
        threads if threads is not None else default_threads())
    mod = load_model(model, shapes, example_inputs)
    families = read_kernel_families(tuning_db)  # what tuning measured fastest, per layer
    report = layer_report(mod, qnn_target.layout, families)
    _log_report(report, strict)
    inputs = [TensorInfo(p.name, tuple(int(s) for s in p.ty.shape.values), str(p.ty.dtype))
              for p in mod["main"].params]
    logger.info("compiling for %s", qnn_target.describe())
    offload = qnn_target.offload(mod, tuning_db)
    # An accelerator's tuning folder may hold its own records only (its tilings).
    own_records_only = offload is not None and offload.tuned and not has_records(tuning_db)
    schedules = KernelSchedules.find(qnn_target, None if own_records_only else tuning_db)
    kernels: dict = {}  # the scheduled layer kernels, for Artifact.profile(split=True)
    exe = tvm.compile(mod, qnn_target.tvm_target, relax_pipeline=build_pipeline(
        qnn_target, schedules, offload.rewrite if offload is not None else None, families,
        kernels_out=kernels))
    if offload is not None:
        for row in report:
            if row["name"] in offload.drivers:
                row["device"] = "accel"
            elif row["bitserial"]:
                row.update(device="cpu", offload_reason=offload.reasons.get(row["name"], ""))
    return Artifact(exe, inputs, qnn_target.describe(), report, qnn_target=qnn_target,
                    accel_layers=offload.drivers if offload is not None else None,
                    threads=threads, kernels=kernels)


def load(path: str | os.PathLike, device=None) -> Artifact:
    """Load a library written by :meth:`Artifact.export_library` (for its target: code for
    another architecture runs on the target's emulated device)."""
    path = os.fspath(path)
    meta, inputs = read_sidecar(path)
    qnn_target = resolve_target(meta["target_alias"]) if meta.get("target_alias") else None
    threads = meta.get("threads")
    if qnn_target is not None and not qnn_target.runs_here():
        return Artifact(None, inputs, meta["target"], meta["layers"], device, qnn_target,
                        library=path, threads=threads, digest=meta.get("library"))
    try:
        module = tvm.runtime.load_module(path)
    except Exception as err:  # noqa: BLE001 - TVM's loader errors are untyped
        raise LibraryFileError(f"{path}: not a library tvm_qnn can load ({err})") from None
    return Artifact(module, inputs, meta["target"], meta["layers"], device, qnn_target,
                    library=path, threads=threads, digest=meta.get("library"))


__all__ = ["compile", "load"]
