# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.tune``: MetaSchedule + XGBoost over the bit-serial schedule templates.

Each distinct layer kernel is a task. Its design space is the target's own template with the
register-tile parameters (positions × output-channel vectors) left to ``sample_perfect_tile``
decisions and the unroll depth to a categorical one (``QnnTarget.schedule_space``),
so the evolutionary search, guided by the XGBoost cost model, explores exactly that space.
Records go to MetaSchedule's JSON database in ``work_dir``; a second call on the same
directory skips tasks that already have their trials and spends only the rest on the others.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from ..frontend import load_model
from ..pipeline import lower_for_tuning
from ..target import resolve_target
from ..transform import find_layers
from .choice import chosen_record, default_schedule, is_default
from .database import measured_records, open_database
from .disk import check_free_space, check_written
from .families import (
    SEARCH_MARGIN,
    choose_kernel_families,
    family_tasks,
    outclassed,
    read_kernel_families,
    write_kernel_families,
)
from .retime import (
    interleaved_min,
    kernel_timer,
    mark_retiming,
    marked_for_retiming,
    measure_default,
    retime_best,
)
from .runners import make_builder, make_runner
from .search import search
from .tasks import Task, extract_tasks

logger = logging.getLogger("tvm_qnn")


@dataclass
class TaskResult:
    """One row of the final table of :func:`tune`."""

    task: str
    kind: str
    bits: str
    trials: int  # records in the database
    best_ms: float | None  # the schedule compile uses from the database, timed here
    default_ms: float | None  # the default template, timed the same way
    #: True when no tuned record beats the default template's by MIN_GAIN: compile keeps the
    #: default template (best_ms is then its time).
    kept_default: bool = False

    @property
    def speedup(self) -> float | None:
        """Default time / tuned time."""
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None


def tune(model, target="x86", *, trials: int = 64, work_dir: str | os.PathLike = "tvm_qnn_tuning",
         runner=None, timeout: float = 30, shapes: dict | None = None, example_inputs=None,
         seed: int | None = None) -> ms.database.Database:
    """Tune the bit-serial layers of ``model`` for ``target``; return the tuning database.

    Parameters
    ----------
    model, shapes, example_inputs
        As for :func:`tvm_qnn.compile`.
    target : str, dict, tvm.target.Target or QnnTarget
        The device to tune for (``"x86"``: this CPU).
    trials : int
        Measured candidates per distinct layer kernel, at most (the search stops earlier when
        the template has no unmeasured candidate left).
    work_dir : path
        Where the JSON database (and MetaSchedule's logs) live. Tuning again with the same
        directory resumes: tasks with ``trials`` records are skipped, others get the rest.
        Where the target has several kernel families for a layer, ``kernel_families.json``
        here says which one the layers of each signature get (each family is tuned and timed;
        the fastest wins), and ``compile`` with this ``tuning_db`` follows it.
    runner : "local", "model", "KEY@HOST:PORT", RemoteDevice or tvm.s_tir.meta_schedule.Runner
        Where candidates are timed: this CPU (default for a target that runs here), a device
        registered with a TVM RPC tracker (a board running ``tvm.exec.rpc_server --tracker``;
        ``RPCDevice`` on loopback), or ``"model"`` (default for an aarch64 board that is not
        this host): the llvm-mca model of the board's core scores each candidate's
        xor-popcount loop (:mod:`tvm_qnn.target.arm.model_runner`). Candidates that fail or time
        out are logged and recorded as failed. A tracker is asked first whether it has a server
        with the key (:meth:`~tvm_qnn.runtime.rpc.RemoteDevice.check`).
    timeout : float
        Seconds a candidate (and an RPC session) may take before it counts as failed.
    seed : int, optional
        Seed of the search, for reproducible runs.

    Returns
    -------
    tvm.s_tir.meta_schedule.Database
        Pass it (or ``work_dir``) to ``tvm_qnn.compile(..., tuning_db=...)``;
        :func:`tune_report` gives the table of tuned vs default times. For ``"accel"``: a
        dict of layer name → tiling record (``QnnTarget.tune_layers``: the simulator's cycle
        count is the runner); pass ``work_dir`` to ``compile``.

    Raises
    ------
    TvmQnnError
        Among others: the runner's tracker does not answer or has no server with its key
        (before anything is built), or the runner cannot measure even a task's default schedule
        (then every candidate would fail too; what was measured before stays in ``work_dir``).
    """
    if trials < 1:
        raise TvmQnnError(f"trials={trials}: at least 1")
    qnn_target = resolve_target(target)
    mod = load_model(model, shapes, example_inputs)
    own = qnn_target.tune_layers(mod, os.fspath(work_dir), trials)
    if own is not None:  # the target tunes its own lowering (the accelerator's tilings)
        return own
    tasks = extract_tasks(lower_for_tuning(mod, qnn_target))
    if not tasks:
        raise TvmQnnError("the model has no bit-serial layer to tune")
    modelled = runner == "model" or (runner is None and not qnn_target.runs_here())
    # The kernel family is a tuning dimension where the target has several and times them:
    # each family's variant is tuned, then the model as the chosen families make it.
    variants = {} if modelled else _family_variants(mod, qnn_target)
    if variants:
        tasks = _distinct(*variants.values())
    # This CPU's runner: its best records are timed again here after the search (retime_best).
    local = qnn_target.runs_here() and (runner in (None, "local")
                                        or isinstance(runner, ms.runner.LocalRunner))
    funcs = [t.mod["main"] for t in tasks]
    spec, runner = runner, None if local else make_runner(runner, timeout, qnn_target, funcs)
    if modelled:
        # A model of the device scores what it can (llvm-mca: the xor-popcount loop).
        for task in [t for t in tasks if not qnn_target.can_model(t.mod["main"])]:
            logger.info("%s: a kernel the device model does not score (no popcount loop): "
                        "default template", task.name)
        tasks = [t for t in tasks if qnn_target.can_model(t.mod["main"])]
        if not tasks:
            raise TvmQnnError("the model has no bit-serial layer the device model can score")
    work_dir = os.fspath(work_dir)
    # The workloads go in while the folder is locked: another tune on it numbers its own after.
    db = open_database(work_dir, create=True, workloads=[t.mod for t in tasks])
    check_free_space(work_dir)

    @functools.cache
    def workers():
        """The runner and one builder for the whole run, made when first needed: each starts
        a worker pool, seconds that a run with nothing to measure does not need."""
        made = runner or make_runner(spec, timeout, qnn_target, funcs)
        return made, make_builder(made)

    compared = family_tasks(variants) if variants else {}
    try:
        _tune_tasks(tasks, trials, qnn_target, db, work_dir, workers, local, seed, compared)
        if variants:  # the kernel family: keep each layer's fastest, tune what that makes new
            final = _choose_families(mod, qnn_target, compared, open_database(work_dir),
                                     work_dir)
            new = [t for t in final if not any(tvm_ffi.structural_equal(t.mod, k.mod)
                                               for k in tasks)]
            if new:
                db = open_database(work_dir, workloads=[t.mod for t in new])
                _tune_tasks(new, trials, qnn_target, db, work_dir, workers, local, seed, {})
    finally:
        if workers.cache_info().currsize:  # the builder's worker pool, if one was started
            workers()[1].close()
    return open_database(work_dir) if local or variants else db


def _family_variants(mod, qnn_target) -> dict[str, list[Task]]:
    """The tasks of ``mod`` lowered with each kernel family the target has forced on every
    layer that fits it ({} for a target with one family)."""
    if len(qnn_target.kernel_families) < 2:
        return {}
    return {family: extract_tasks(lower_for_tuning(mod, qnn_target,
                                                   qnn_target.layout.with_family(family)))
            for family in qnn_target.kernel_families}


def _distinct(*task_lists: list[Task]) -> list[Task]:
    """The tasks of all lists, each workload once (its layers merged)."""
    merged: list[Task] = []
    for task in (t for tasks in task_lists for t in tasks):
        same = next((m for m in merged if tvm_ffi.structural_equal(m.mod, task.mod)), None)
        if same is None:
            merged.append(Task(task.kind, task.bits, task.mod, list(task.layers)))
        else:
            same.layers.extend(x for x in task.layers if x not in same.layers)
    return merged


def _choose_families(mod, qnn_target, compared, db, work_dir: str) -> list[Task]:
    """Write each compared layer's fastest family (``compared``: :func:`family_tasks`); the
    tasks of the model lowered with them."""
    if not compared:
        return []
    signatures = {m.name: m.layer.signature for m in find_layers(mod["main"])
                  if m.layer is not None}
    choices = choose_kernel_families(compared, db, signatures, qnn_target)
    write_kernel_families(work_dir, choices)
    return extract_tasks(lower_for_tuning(mod, qnn_target, families=choices))


def _tune_tasks(tasks: list[Task], trials: int, qnn_target, db, work_dir: str, workers,
                local: bool, seed, compared: dict[str, dict[str, Task]]) -> None:
    """Measure each task's default schedule, search the pending ones, re-time the best.

    ``compared``: the layers whose kernel family is being chosen (:func:`family_tasks`); a
    family's kernel far slower than another's on its layers is not searched
    (:func:`~.families.outclassed`): its default record stands for it in the choice.
    """
    pending, budgets = [], []
    for task in tasks:
        done = len(measured_records(db, task.mod))
        if done == 0:
            error = measure_default(task, qnn_target, db, *workers())
            if error:
                # The schedule compile uses, failing: a runner that cannot reach its
                # device, a device that cannot run the code. Every candidate would fail the
                # same way (measured: 160 s of them, then "tuned" with nothing measured).
                raise TvmQnnError(f"{task.name}: the runner could not measure even the "
                                  f"default schedule ({error}); tuning stopped, nothing "
                                  f"was measured for it ({work_dir} keeps what was, a "
                                  "re-run resumes)")
            check_written(db, work_dir)
            done = len(measured_records(db, task.mod))
        if done >= trials:
            logger.info("%s: %d trials in the database, skipped", task.name, done)
        else:
            pending.append(task)
            budgets.append(trials - done)
    skipped = outclassed(pending, compared, db)
    for why in skipped.values():
        logger.info("not searched, its default template over %.3g times slower than "
                    "another family's: %s", SEARCH_MARGIN, why)
    # Marked before the search: a run killed before the re-timing is done has the next one
    # do it (every trial is in the database then: it searches nothing). The tasks not searched
    # are re-timed too, once (a re-timed record keeps one time, the runner's five): the family
    # choice compares times taken the same way.
    retime = [t for i, t in enumerate(pending)
              if i not in skipped or len(measured_records(db, t.mod, limit=1)[0].run_secs) > 1]
    if retime and local:
        mark_retiming(work_dir, retime)
    searched = [t for i, t in enumerate(pending) if i not in skipped]
    if searched:
        search(searched, [b for i, b in enumerate(budgets) if i not in skipped], qnn_target,
                seed, work_dir, db, workers)
    if local:
        unfinished = marked_for_retiming(work_dir, tasks)
        if unfinished:
            retime_best(unfinished, qnn_target, work_dir)


def _seconds(qnn_target, task: Task, *scheduled) -> list[float | None]:
    """Seconds of each schedule of ``task``'s kernel: timed on this host in turn
    (:func:`~.retime.interleaved_min`), or the target's model of its device (None where the
    model cannot score one)."""
    if qnn_target.runs_here():
        return interleaved_min([kernel_timer(f, qnn_target.tvm_target) for f in scheduled],
                               rounds=5)
    return [qnn_target.model_seconds(f, task.mod["main"]) for f in scheduled]


def tune_report(model, target="x86", tuning_db="tvm_qnn_tuning", *, shapes=None,
                example_inputs=None, time_kernels: bool = True) -> list[TaskResult]:
    """One row per task: trials in the database, tuned and default kernel time (the tasks of
    the model as ``compile`` lowers it with the same ``tuning_db``: its kernel families).

    Times are measured on this host, the two kernels in turn, the fastest of 5 rounds each
    (:func:`~.retime.interleaved_min`); for an aarch64 board that is not this host, the
    llvm-mca model of its xor-popcount loop (as the model runner scored them). Where no tuned
    record beats the default template's by :data:`~.choice.MIN_GAIN`, ``compile`` keeps the
    default: the row says so (``kept_default``) and times it once.
    """
    qnn_target = resolve_target(target)
    db = open_database(tuning_db)
    tasks = extract_tasks(lower_for_tuning(load_model(model, shapes, example_inputs), qnn_target,
                                           families=read_kernel_families(tuning_db)))
    rows = []
    for task in tasks:
        best = default = None
        records = measured_records(db, task.mod)
        default_sch = default_schedule(qnn_target, task.kind, task.mod)
        trace = None if default_sch is None else str(default_sch.trace)
        rec = chosen_record(records, trace)
        kept_default = rec is not None and is_default(rec, trace)
        if time_kernels:
            default_func = qnn_target.schedule(task.kind, task.mod["main"]) \
                if default_sch is None else default_sch.mod["main"]
            if rec is None or kept_default:
                (default,) = _seconds(qnn_target, task, default_func)
                best = default if kept_default else None
            else:
                sch = s_tir.Schedule(task.mod)
                rec.trace.apply_to_schedule(sch, remove_postproc=False)
                default, best = _seconds(qnn_target, task, default_func, sch.mod["main"])
        rows.append(TaskResult(task.name, task.kind, task.bits, len(records),
                               None if best is None else best * 1e3,
                               None if default is None else default * 1e3, kept_default))
    return rows


__all__ = ["TaskResult", "tune", "tune_report"]
