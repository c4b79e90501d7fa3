# SPDX-License-Identifier: Apache-2.0
"""Timing the schedules tuning keeps, the way ``compile`` runs them.

The default template is measured first (by the tuning runner), so the search starts from it
and what the database calls best is never slower than what ``compile`` would use untuned.
After the search the best records are timed again in this process (:func:`retime_best`).

A search's tasks are marked in ``work_dir/retime_pending.json`` before it starts
(:func:`mark_retiming`) and unmarked once their new times are in the database: a run killed
in between (``kill -9`` while re-timing) has its re-timing done by the next ``tune``, which
finds every record already measured and would otherwise search nothing and re-time nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import statistics

import numpy as np
import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from ..runtime.atomic import publish
from ..runtime.stack_offset import STACK_DEPTHS, call_at_stack_depth
from ..runtime.timing import evaluator_seconds
from .database import mean_seconds, measured_records, open_database, replace_records
from .repair import locked
from .tasks import Task

logger = logging.getLogger("tvm_qnn")

#: The workloads whose records wait to be timed again here (JSON list of workload hashes).
RETIME_FILE = "retime_pending.json"


def _key(task: Task) -> str:
    """The workload hash the database files ``task`` under."""
    return str(ms.database.Workload(task.mod).as_json()[0])


def _marked(work_dir: str) -> set[str] | None:
    """The marked workload hashes; None when the marker cannot be read (then every task
    counts as marked: re-timing costs seconds, a lost one a silently worse schedule)."""
    path = os.path.join(work_dir, RETIME_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            keys = json.load(f)
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as err:
        logger.warning("%s cannot be read (%s): timing the records of every task again",
                       path, err)
        return None
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        logger.warning("%s is not a list of workload hashes: timing the records of every task "
                       "again", path)
        return None
    return set(keys)


def _update_marks(work_dir: str, add=(), remove=()) -> None:
    """Add and remove tasks of the marker, published whole (or removed when empty)."""
    path = os.path.join(work_dir, RETIME_FILE)
    try:
        with locked(work_dir):
            keys = (_marked(work_dir) or set()) | {_key(t) for t in add}
            keys -= {_key(t) for t in remove}
            if keys:
                with publish() as temp, open(temp(path), "w", encoding="utf-8") as f:
                    json.dump(sorted(keys), f)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
    except OSError as err:
        raise TvmQnnError(f"{path}: cannot write it ({err.strerror or err}); it says which "
                          "tuning records still wait to be timed again") from None


def mark_retiming(work_dir: str, tasks: list[Task]) -> None:
    """Mark ``tasks``: their records are to be timed again (:func:`retime_best` unmarks)."""
    _update_marks(work_dir, add=tasks)


def marked_for_retiming(work_dir: str, tasks: list[Task]) -> list[Task]:
    """Those of ``tasks`` whose re-timing was marked and not finished (all of them when the
    marker cannot be read)."""
    keys = _marked(work_dir)
    return [t for t in tasks if keys is None or _key(t) in keys]


def kernel_timer(func: tvm.tirx.PrimFunc, target, number: int = 1, repeat: int = 3,
                 arg_sets: int = 2, depths=STACK_DEPTHS):
    """``func`` compiled once, on ``arg_sets`` allocations of random arguments: a callable
    returning the median seconds over every (allocation, stack depth) pair, each pair the
    median of TVM's time evaluator on this host (repeats of at least 10 ms, as the tuning
    runner).

    Where the arguments land and where the stack lies matter as much as the schedule, since a
    kernel that spills can alias its stack slots with the data it streams: measured on a Zen 4
    VM, the same conv7 W1A1 kernel took 0.32-0.43 ms depending on the (compiled code, argument
    buffers) pair, in two clusters, and an ``x86:haswell`` lookup conv 0.0127 or 0.0146 ms
    depending on the stack's offset (:mod:`~tvm_qnn.runtime.stack_offset`). One allocation per
    kernel made a tuned record look 0.77x the default template's speed when it was not. The
    median over allocations and ``depths`` (padding arguments of
    :func:`~tvm_qnn.runtime.stack_offset.call_at_stack_depth`) is what a process drawing
    one of them at random sees most often.
    """
    lib = tvm.compile(func, target).mod
    dev = tvm.cpu()
    infos = ms.arg_info.ArgInfo.from_prim_func(func)
    rng = np.random.default_rng(0)
    values = []
    for info in infos:
        shape = tuple(int(s) for s in info.shape)
        dtype = str(info.dtype)
        if "float" in dtype:
            values.append(rng.random(shape, dtype=np.float32).astype(dtype))
        else:
            limits = np.iinfo(dtype)
            values.append(rng.integers(max(limits.min, -100), min(limits.max, 100),
                                       shape).astype(dtype))
    sets = [[tvm.runtime.tensor(v, dev) for v in values] for _ in range(arg_sets)]

    def one(args):
        return evaluator_seconds(lib, lib.entry_name, dev, *args, number=number,
                                 repeat=repeat, min_repeat_ms=10)

    return lambda: statistics.median(call_at_stack_depth(functools.partial(one, args), words)
                                     for args in sets for words in depths)


def interleaved_min(timers: list, rounds: int = 3) -> list[float]:
    """Seconds of each timer: the fastest of ``rounds`` samples, the timers taken in turn
    within each round.

    On a shared host a neighbour's load only ever adds time, and it comes and goes within
    seconds: measured one after the other, two equal kernels differed by up to 40 % (Zen 4),
    so the first kernel's load was the second's advantage. Taken in turn, both see the same
    load; the minimum keeps the samples it spared.
    """
    samples = [[] for _ in timers]
    for _ in range(rounds):
        for timer, mine in zip(timers, samples, strict=True):
            mine.append(timer())
    return [min(mine) for mine in samples]


def measure_default(task: Task, qnn_target, db, runner, builder) -> str | None:
    """Measure the default template with the tuning runner (and its ``builder``) and record
    it in ``db``; return why that failed (None when it was recorded)."""
    sch = s_tir.Schedule(task.mod)
    qnn_target.template(task.kind)(sch)
    (built,) = builder.build([ms.builder.BuilderInput(sch.mod, qnn_target.tvm_target)])
    if built.error_msg:
        error = built.error_msg.strip().splitlines()[-1]
        logger.warning("%s: the default template failed to build: %s", task.name, error)
        return error
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
    (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args_info)])
    result = future.result()
    ms.utils.remove_build_dir(built.artifact_path)  # the builder's own temporary directory
    if result.error_msg:
        error = result.error_msg.strip().splitlines()[-1]
        logger.warning("%s: the default template failed to run: %s", task.name, error)
        return error
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), result.run_secs, qnn_target.tvm_target,
        args_info))
    return None


def retime_best(tasks: list[Task], qnn_target, work_dir: str, max_checks: int = 8,
                rounds: int = 3) -> None:
    """Time each task's best records again in this process, the way ``compile`` runs them,
    and store those times in place of the runner's.

    The runner times each candidate in a fresh worker process, and a schedule can be lucky
    there: measured on conv7 W1A1 (Zen 5), the runner's best took 0.0538 ms there and
    0.064-0.083 ms here in every re-run, against 0.055 ms for the default template. So the
    best record is timed here, in turn with the default template's (:func:`interleaved_min`,
    ``rounds`` each time); while the fastest record is one not yet re-timed, that one is timed
    too, up to ``max_checks`` per task. The default keeps the fastest of all its samples, and
    its record is added where it is missing (a pruned database): ``compile`` uses a record only
    where it beats the default's (:mod:`.choice`). The tasks are unmarked
    (:func:`mark_retiming`) once the new times are in the database.
    """
    db = open_database(work_dir)
    retimed: dict[tuple[int, str], float] = {}  # (task, trace) -> seconds
    workloads = [db.commit_workload(task.mod) for task in tasks]
    defaults: dict[int, s_tir.Schedule] = {}
    for k, task in enumerate(tasks):
        records = measured_records(db, task.mod)
        if not records:
            continue
        default = defaults[k] = s_tir.Schedule(task.mod)
        qnn_target.template(task.kind)(default)
        default_trace = str(default.trace)
        default_timer = kernel_timer(default.mod["main"], qnn_target.tvm_target)

        def seconds(rec, k=k):
            return retimed.get((k, str(rec.trace)), mean_seconds(rec))

        def retime(rec, k=k, task=task, default_timer=default_timer,
                   default_trace=default_trace):
            key = (k, default_trace)
            if str(rec.trace) == default_trace:
                (default_s,) = interleaved_min([default_timer], rounds)
            else:
                sch = s_tir.Schedule(task.mod)
                rec.trace.apply_to_schedule(sch, remove_postproc=False)
                retimed[(k, str(rec.trace))], default_s = interleaved_min(
                    [kernel_timer(sch.mod["main"], qnn_target.tvm_target), default_timer],
                    rounds)
            retimed[key] = min(default_s, retimed.get(key, default_s))

        runner_best = min(mean_seconds(r) for r in records)
        for _ in range(max_checks):
            best = min(records, key=seconds)
            if (k, str(best.trace)) in retimed:
                break
            retime(best)
        best = min(records, key=seconds)
        logger.info("%s: best record %.4f ms timed here (the runner's best: %.4f ms; the "
                    "default template: %.4f ms)", task.name, seconds(best) * 1e3,
                    runner_best * 1e3, retimed[(k, default_trace)] * 1e3)
    if not retimed:
        _update_marks(work_dir, remove=tasks)
        return

    def fill(new: ms.database.Database) -> None:
        stored = set()
        for rec in db.get_all_tuning_records():
            k = next((k for k, w in enumerate(workloads) if rec.workload.same_as(w)), None)
            mine = retimed.get((k, str(rec.trace)))
            secs = rec.run_secs if mine is None else [mine]
            stored.add((k, str(rec.trace)))
            new.commit_tuning_record(ms.database.TuningRecord(
                rec.trace, new.commit_workload(rec.workload.mod), secs, rec.target,
                rec.args_info))
        # A database whose default record was pruned (keep_best before the choice rule)
        # gets it back: compile needs it to tell whether a record beats the default.
        for k, default in defaults.items():
            key = (k, str(default.trace))
            if key not in stored and key in retimed:
                new.commit_tuning_record(ms.database.TuningRecord(
                    default.trace, new.commit_workload(tasks[k].mod), [retimed[key]],
                    qnn_target.tvm_target,
                    ms.arg_info.ArgInfo.from_prim_func(tasks[k].mod["main"])))

    replace_records(work_dir, fill)
    _update_marks(work_dir, remove=tasks)


__all__ = ["RETIME_FILE", "interleaved_min", "kernel_timer", "mark_retiming",
           "marked_for_retiming", "measure_default", "retime_best"]
