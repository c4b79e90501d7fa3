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
keeps its own bits. As with a tuning database, a record serves only where it beats the default
template's record by :data:`~.choice.MIN_GAIN` (:mod:`.choice`).
"""

from __future__ import annotations

import functools
import logging
import os

import tvm
from tvm.s_tir import meta_schedule as ms

from .. import knobs
from ..topi.attrs import KERNEL_ATTR, block_names
from .choice import near_best
from .database import has_records, is_measured, mean_seconds, open_database

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
    """The measured records of ``path`` a layer may use (:func:`~.choice.near_best`) per
    signature, fastest first."""
    by_signature: dict = {}
    for rec in open_database(path).get_all_tuning_records():
        if is_measured(rec):
            by_signature.setdefault(signature(rec.workload.mod["main"]), []).append(rec)
    return {k: near_best(sorted(recs, key=mean_seconds)) for k, recs in by_signature.items()}


def pretuned_records(path: str, func: tvm.tirx.PrimFunc) -> list:
    """The records of ``path`` with the signature of ``func`` (those it may use), fastest
    first."""
    return _index(os.path.abspath(path)).get(signature(func), [])


__all__ = ["find_pretuned", "pretuned_records", "signature"]
