# SPDX-License-Identifier: Apache-2.0
"""Pre-tuned schedules shipped with tvm_qnn, found the way TVM's TopHub found AutoTVM logs.

``schedules/<key>/`` holds a tuning database (:func:`tvm_qnn.tune`'s JSON files) per device.
:func:`find_pretuned` looks for the exact device first (``x86-znver4``, ``arm-rasp4b``), then
its class (``x86-avx512-vpopcntdq``, ``arm-cortex-a72``); without either, the default
templates are used. ``compile`` does this by itself when no ``tuning_db`` is given and logs
what it found.

A record serves every layer with the same *signature* (kind, argument shapes and dtypes, block
names), not just the model it was tuned on: the record's schedule trace is replayed on the new
layer. Replaying a TensorIR trace never changes what a function computes, only how, so a
layer that differs in its constants (scales, zero-points) gets the tuned loop structure and
keeps its own bits.
"""

from __future__ import annotations

import functools
import logging
import os

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from .. import knobs
from ..topi.attrs import KERNEL_ATTR, block_names
from .database import has_records, is_measured, mean_seconds, open_database
from .tasks import workload

logger = logging.getLogger("tvm_qnn")


def find_pretuned(qnn_target) -> tuple[str, str, str] | None:
    """``(path, key, level)`` of the best pre-tuned database for ``qnn_target``, or None.

    ``level`` is "exact device" or "device class". ``TVM_QNN_SCHEDULES=off`` disables it.
    """
    if knobs.schedules_dir() == "off":
        return None
    for key, level in qnn_target.schedule_keys():
        for folder in knobs.schedules_dirs():
            path = os.path.join(folder, key)
            if has_records(path):
                return path, key, level
    return None


def signature(func: tvm.tirx.PrimFunc) -> tuple:
    """What a tuned schedule needs to replay on ``func``: kind, arguments, blocks."""
    kind = str(func.attrs.get(KERNEL_ATTR, "")) if func.attrs is not None else ""
    args = tuple((str(a.dtype), tuple(int(d) for d in a.shape))
                 for a in ms.arg_info.ArgInfo.from_prim_func(func))
    return kind, args, block_names(func)


@functools.lru_cache(maxsize=8)
def _index(path: str) -> dict:
    """The best measured record of ``path`` per signature."""
    best: dict = {}
    for rec in open_database(path).get_all_tuning_records():
        if not is_measured(rec):
            continue
        key = signature(rec.workload.mod["main"])
        mean = mean_seconds(rec)
        if key not in best or mean < best[key][0]:
            best[key] = (mean, rec)
    return {k: rec for k, (_, rec) in best.items()}


def replay(path: str, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by the record of ``path`` with its signature, or None."""
    rec = _index(os.path.abspath(path)).get(signature(func))
    if rec is None:
        return None
    sch = s_tir.Schedule(workload(func))
    try:
        rec.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception as err:  # noqa: BLE001 - a trace that does not fit: the default template
        logger.info("a pre-tuned record did not replay (%s); default template", err)
        return None
    return sch.mod["main"]


__all__ = ["find_pretuned", "replay", "signature"]
