# SPDX-License-Identifier: Apache-2.0
"""The kernel family as a dimension of tuning: each layer measured in every family it fits.

A target with more than one kernel family for a conv (x86: bit-serial popcounts and int8 dot
products, :data:`~tvm_qnn.topi.layout.KERNEL_FAMILIES`) has its cost model pick one by default.
:func:`tvm_qnn.tune` also lowers the model with each family forced on every layer that fits it
(:meth:`~tvm_qnn.topi.layout.Layout.with_family`), tunes the kernels of every variant, and
keeps, per layer, the family whose kernel ``compile`` would use was fastest
(:func:`choose_kernel_families`). The choices go to ``work_dir/kernel_families.json``
(written whole), which ``compile(..., tuning_db=work_dir)`` reads back
(:func:`read_kernel_families`). Choices are keyed by the layer's
:attr:`~tvm_qnn.topi.layer.QuantizedLayer.signature` (shape, window, bit widths: what the
kernels' speed depends on), so models tuned into one folder keep each other's choices even
where their layers share names, and a choice serves every layer of its signature.

Each family's kernel is timed as it runs in that variant (a bit-serial conv next to other
bit-serial convs reads and writes channels-last codes): the times compare the kernels, not the
small packs between layers.
"""

from __future__ import annotations

import json
import logging
import os

import tvm_ffi

from ..runtime.atomic import publish
from ..topi.layout import KERNEL_FAMILIES, KernelChoice
from .choice import chosen_record, default_trace
from .database import mean_seconds, measured_records
from .tasks import Task

logger = logging.getLogger("tvm_qnn")

#: The file in a tuning folder that holds the kernel family of each compared layer.
FAMILIES_FILE = "kernel_families.json"

#: A family's kernel is not searched when its default template is more than this many times
#: slower, on every layer it serves, than another family's default template: no search has
#: gained that much. Tuning gained at most 1.23x over a default template on the suite convs
#: (``x86:znver4`` conv56 W1A1; 1.15x on the ``x86:haswell`` lut kernel of conv14 W2A2), and
#: searching all three families of one ``x86:haswell`` suite conv took 87-138 s for 64 trials
#: each, a third of it on int8-dot kernels 1.4-4x slower than the lookups (one Zen 4).
SEARCH_MARGIN = 1.5


def family_tasks(variants: dict[str, list[Task]]) -> dict[str, dict[str, Task]]:
    """Layer name → {family: the task of its kernel in that family's variant}, for the
    layers whose kernel differs between the variants (the others have nothing to compare);
    of families that give a layer the same kernel, the first one only."""
    by_layer: dict[str, dict[str, Task]] = {}
    for family, tasks in variants.items():
        for task in tasks:
            for layer in task.layers:
                by_layer.setdefault(layer, {})[family] = task
    compared = {}
    for layer, found in by_layer.items():
        if len(found) != len(variants):
            continue
        # A family whose kernel does not fit the layer lowers it as an earlier one does: the
        # same kernel, kept under the first family's name only.
        distinct: dict[str, Task] = {}
        for family, task in found.items():
            if not any(tvm_ffi.structural_equal(task.mod, t.mod) for t in distinct.values()):
                distinct[family] = task
        if len(distinct) > 1:
            compared[layer] = distinct
    return compared


def choose_kernel_families(compared: dict[str, dict[str, Task]], db,
                           signatures: dict[str, str], qnn_target) -> dict[str, KernelChoice]:
    """Per compared layer (``signatures``: layer name → its signature), the family whose
    kernel ``compile`` would use (:func:`~.choice.chosen_record` of its records in ``db``) is
    fastest (a family without a measured record cannot be chosen), keyed by the layer's
    signature."""
    choices = {}
    for layer, tasks in compared.items():
        best = {}
        for family, task in tasks.items():
            rec = chosen_record(measured_records(db, task.mod),
                                default_trace(qnn_target, task.kind, task.mod))
            if rec is not None:
                best[family] = mean_seconds(rec)
        if not best:
            continue
        family = min(best, key=best.get)
        times = tuple(sorted(((f, s * 1e3) for f, s in best.items()), key=lambda kv: kv[1]))
        why = "tuned: " + ", ".join(f"{f} {ms:.3g} ms" for f, ms in times)
        choices[signatures[layer]] = KernelChoice(family, signatures[layer], why, times)
        logger.info("%s: %s", layer, why)
    return choices


def _best_seconds(db, mod) -> float | None:
    records = measured_records(db, mod, limit=1)
    return mean_seconds(records[0]) if records else None


def outclassed(tasks: list[Task], compared: dict[str, dict[str, Task]], db,
               margin: float = SEARCH_MARGIN) -> dict[int, str]:
    """The tasks not worth searching, by index into ``tasks``, with why: those whose best
    record in ``db`` (their default template's, before a search) is more than ``margin`` times
    another family's on every layer they serve. A task serving a layer that is not
    ``compared`` (one kernel for it whatever the family), or without a record, is searched."""
    skipped = {}
    for index, task in enumerate(tasks):
        own = _best_seconds(db, task.mod)
        reasons = []
        for layer in task.layers:
            mine, others = "its", {}
            for f, t in compared.get(layer, {}).items():
                if tvm_ffi.structural_equal(t.mod, task.mod):
                    mine = f
                elif (seconds := _best_seconds(db, t.mod)) is not None:
                    others[f] = seconds
            if own is None or not others or own <= margin * min(others.values()):
                break
            best = min(others, key=others.get)
            reasons.append(f"{layer}: {mine} kernel {own * 1e3:.3g} ms, {best} "
                           f"{others[best] * 1e3:.3g} ms")
        else:
            if reasons:
                skipped[index] = "; ".join(reasons)
    return skipped


def write_kernel_families(work_dir: str, choices) -> None:
    """Publish ``choices`` (KernelChoices, or a mapping whose values they are) with those of
    other signatures already in the file, whole."""
    values = choices.values() if isinstance(choices, dict) else choices
    merged = {**read_kernel_families(work_dir), **{c.signature: c for c in values}}
    path = os.path.join(work_dir, FAMILIES_FILE)
    with publish() as temp, open(temp(path), "w", encoding="utf-8") as f:
        json.dump({sig: {"family": c.family, "signature": c.signature, "why": c.why,
                         "times_ms": dict(c.times_ms)}
                   for sig, c in sorted(merged.items())}, f, indent=1)


def read_kernel_families(tuning_db) -> dict[str, KernelChoice]:
    """The choices in a tuning folder (``tuning_db`` as ``compile`` takes it), signature →
    choice: {} for no folder, a Database object, or a folder without the file (files keyed by
    layer name, as written before, read the same). A file that cannot be read is warned
    about and ignored: the cost model then chooses, which is slower at worst."""
    if not isinstance(tuning_db, (str, os.PathLike)):
        return {}
    path = os.path.join(os.fspath(tuning_db), FAMILIES_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return {str(c["signature"]): KernelChoice(
                    str(c["family"]), str(c["signature"]), str(c["why"]),
                    tuple((str(f), float(ms)) for f, ms in c.get("times_ms", {}).items()))
                for c in raw.values() if c["family"] in KERNEL_FAMILIES}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        logger.warning("%s cannot be read (%s): the cost model chooses every kernel family",
                       path, err)
        return {}


__all__ = ["FAMILIES_FILE", "SEARCH_MARGIN", "choose_kernel_families", "family_tasks",
           "outclassed", "read_kernel_families", "write_kernel_families"]
