# SPDX-License-Identifier: Apache-2.0
"""``tvm_qnn.tune``: MetaSchedule + XGBoost over the bit-serial schedule templates.

Each distinct layer kernel is a task. Its design space is the target's own template with the
register-tile knobs (positions × output-channel vectors) left to ``sample_perfect_tile``
decisions and the unroll depth to a categorical one (``QnnTarget.schedule_space``),
so the evolutionary search, guided by the XGBoost cost model, explores exactly our knob space.
Records go to MetaSchedule's JSON database in ``work_dir``; a second call on the same
directory skips tasks that already have their trials and spends only the rest on the others.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from .database import open_database, replace_records
from .tasks import Task, extract_tasks

logger = logging.getLogger("tvm_qnn")


@dataclass
class TaskResult:
    """One row of the final table of :func:`tune`."""

    task: str
    kind: str
    bits: str
    trials: int  # records in the database
    best_ms: float | None  # the tuned schedule, timed here
    default_ms: float | None  # the default template, timed the same way

    @property
    def speedup(self) -> float | None:
        """Default time / tuned time."""
        if self.best_ms and self.default_ms:
            return self.default_ms / self.best_ms
        return None


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """A tqdm bar per task; failed candidates are logged and skipped, never fatal."""

    def __init__(self, tasks: list[Task], budgets: list[int]):
        from tqdm import tqdm

        self.bars = [tqdm(total=b, desc=f"tuning {t.name}", unit="trial", leave=True)
                     for t, b in zip(tasks, budgets, strict=True)]

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results):
        for build, run in zip(builder_results, runner_results, strict=True):
            error = build.error_msg or run.error_msg
            if error:
                logger.warning("a candidate failed (skipped): %s", str(error).splitlines()[-1])
        self.bars[task_id].update(len(runner_results))

    def close(self):
        for bar in self.bars:
            bar.close()


# Tuning writes each candidate's build (a few hundred KiB) and a record per trial.
_MIN_FREE_BYTES = 16 << 20


def _check_free_space(work_dir: str) -> None:
    free = shutil.disk_usage(work_dir).free
    if free < _MIN_FREE_BYTES:
        raise TvmQnnError(f"{work_dir}: only {free >> 10} KiB free on its disk; tuning writes "
                          "builds and records there. Free some space and run tune again: it "
                          "resumes from the database.")


def _records_on_disk(work_dir: str) -> tuple[int, bool]:
    """(lines of the record file, whether its last line is whole JSON)."""
    path = os.path.join(work_dir, "database_tuning_record.json")
    if not os.path.isfile(path):
        return 0, True
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    try:
        whole = not lines or bool(json.loads(lines[-1]))
    except ValueError:
        whole = False
    return len(lines), whole


def _check_written(db: ms.database.Database, work_dir: str) -> None:
    """Every record MetaSchedule holds must be on disk, whole.

    Its JSON database appends a line per record and does not check the write: on a full disk
    the line is cut short (or missing) and tuning would carry on, losing every result.
    """
    held = len(db.get_all_tuning_records())
    lines, whole = _records_on_disk(work_dir)
    if lines < held or not whole:
        raise TvmQnnError(
            f"{work_dir}: a tuning record could not be written ({held} measured, {lines} on "
            "disk{}): is the disk full? The records written so far are kept; free some space "
            "and run tune again: it resumes from the database.".format(
                "" if whole else ", the last one cut short"))


@derived_object
class _WriteCheck(ms.measure_callback.PyMeasureCallback):
    """After each batch (and MetaSchedule's own commit): :func:`_check_written`."""

    def __init__(self, db: ms.database.Database, work_dir: str):
        self.db = db
        self.work_dir = work_dir

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
              runner_results):
        _check_written(self.db, self.work_dir)


def _records(db: ms.database.Database, mod: tvm.IRModule, limit: int = 1 << 20) -> list:
    """The measured records of ``mod`` (failed candidates, stored as 1e10 s, left out)."""
    if not db.has_workload(mod):
        return []
    return [r for r in db.get_top_k(db.commit_workload(mod), limit)
            if r.run_secs and max(float(s) for s in r.run_secs) < 1e9]


def _runner(runner, timeout: float, backend=None, tasks=()) -> ms.runner.Runner:
    """A MetaSchedule runner: this CPU by default, or a device behind a TVM RPC tracker, or
    (``"model"``, the default for a board that is not this host) the llvm-mca model."""
    from ..runtime.rpc import RemoteDevice

    # Candidates of one template differ by a few percent: each repeat runs >= 10 ms so the
    # noise of a shared machine does not pick the winner (measured: with 3 bare repeats the
    # "best" record was up to 15 % slower than the default template when timed again).
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=10)
    if runner is None and backend is not None and not backend.runs_here():
        runner = "model"
    if runner == "model":
        from .model_runner import ModelRunner, args_key, popcount_bytes

        board = _modelled_board(backend)
        if board is None:
            raise TvmQnnError(f"runner='model' scores aarch64 boards with llvm-mca; "
                              f"{backend.describe() if backend else 'no target'} is not one")
        work = {args_key(ms.arg_info.ArgInfo.from_prim_func(t.mod["main"])):
                popcount_bytes(t.mod["main"]) for t in tasks}
        return ModelRunner(board, work)
    if runner is None or runner == "local":
        return ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=timeout)
    if isinstance(runner, str):
        runner = RemoteDevice.parse(runner)
    if isinstance(runner, RemoteDevice):
        # A candidate whose session cannot start (server gone) or that hangs is killed after
        # ``timeout`` and recorded as failed: tuning goes on, a re-run measures it again.
        from tvm.support.popen_pool import PopenPoolExecutor

        config = ms.runner.RPCConfig(tracker_host=runner.tracker_host,
                                     tracker_port=runner.tracker_port,
                                     tracker_key=runner.key, session_timeout_sec=int(timeout))
        rpc_runner = ms.runner.RPCRunner(config, evaluator_config=evaluator)
        # RPCRunner's worker pool has no timeout: with the server gone, the tracker request
        # blocks forever and so would tuning. A pool that kills the worker after ``timeout``
        # turns that into a failed candidate.
        rpc_runner.pool = PopenPoolExecutor(max_workers=1, timeout=timeout)
        return rpc_runner
    return runner


def _time(func: tvm.tirx.PrimFunc, target, number: int = 1, repeat: int = 7) -> float:
    """Median seconds of ``func`` on random arguments (TVM's time evaluator, this host;
    repeats of at least 10 ms, as the tuning runner)."""
    lib = tvm.compile(func, target).mod
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    args = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape = tuple(int(s) for s in info.shape)
        dtype = str(info.dtype)
        if "float" in dtype:
            arr = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            info = np.iinfo(dtype)
            arr = rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
        args.append(tvm.runtime.tensor(arr, dev))
    timer = lib.time_evaluator(lib.entry_name, dev, number=number, repeat=repeat,
                               min_repeat_ms=10)
    return float(np.median(timer(*args).results))


def _modelled_board(backend):
    """The board of an aarch64 target (what the llvm-mca model can score), or None."""
    board = getattr(backend, "board", None)
    return board if board is not None and board.arch == "aarch64" else None


def _model_time(backend, task: Task):
    """``f(func, target) -> seconds`` by the llvm-mca model of an aarch64 board, or None."""
    board = _modelled_board(backend)
    if board is None or task.integer:  # the model scores popcount loops only
        return None
    from ..target.arm.mca import kernel_seconds
    from .model_runner import popcount_bytes

    work = popcount_bytes(task.mod["main"])

    def model(func, target):
        asm = tvm.compile(func, target).mod.inspect_source("asm")
        return kernel_seconds(asm, work, board.mcpu, board.clock_ghz)

    return model


def _build(mod: tvm.IRModule, target, _params):
    """MetaSchedule's default build without its ``import tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic of every target and costs ~20 s in each
    fresh builder process (the builder pool restarts for every batch): most of a trial.
    """
    from tvm.driver import build

    return build(mod, target=target)


def _builder(runner=None) -> ms.builder.Builder:
    from .model_runner import ModelRunner, export_assembly

    if isinstance(runner, ModelRunner):  # nothing runs: the model reads the assembly
        return ms.builder.LocalBuilder(f_build=_build, f_export=export_assembly)
    return ms.builder.LocalBuilder(f_build=_build)


def _measure_default(task: Task, backend, db, runner) -> None:
    """Measure the default template with the tuning runner and record it in ``db``.

    The search then starts from it, and what the database calls best is never slower than
    what compile would use without tuning (both timed by the same runner).
    """
    from tvm import s_tir

    sch = s_tir.Schedule(task.mod)
    backend.template(task.kind)(sch)
    (built,) = _builder(runner).build([ms.builder.BuilderInput(sch.mod, backend.tvm_target)])
    if built.error_msg:
        logger.warning("%s: the default template failed to build: %s", task.name,
                       built.error_msg.splitlines()[-1])
        return
    args_info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
    (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args_info)])
    result = future.result()
    ms.utils.remove_build_dir(built.artifact_path)  # the builder's own temporary directory
    if result.error_msg:
        logger.warning("%s: the default template failed to run: %s", task.name,
                       result.error_msg.splitlines()[-1])
        return
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(task.mod), result.run_secs, backend.tvm_target,
        args_info))


def _mean_secs(rec: ms.database.TuningRecord) -> float:
    """The mean of a record's run times: what the database ranks records by."""
    return float(np.mean([float(x) for x in rec.run_secs]))


def _retime_best(tasks: list[Task], backend, work_dir: str, max_checks: int = 8,
                 rounds: int = 3) -> None:
    """Time each task's best records again in this process, the way ``compile`` runs them,
    and store those times in place of the runner's.

    The runner times each candidate in a fresh worker process, and a schedule can be lucky
    there: measured on conv7 W1A1 (Zen 5), the runner's best took 0.0538 ms there and
    0.064-0.083 ms here in every re-run, against 0.055 ms for the default template. So the
    best record (and the default template's) is timed here; while the fastest record is one
    not yet re-timed, that one is timed too, up to ``max_checks`` per task.
    """
    from tvm import s_tir

    db = open_database(work_dir)
    retimed: dict[tuple[int, str], list[float]] = {}  # (task, trace) -> seconds
    workloads = [db.commit_workload(task.mod) for task in tasks]
    for k, task in enumerate(tasks):
        records = _records(db, task.mod)
        if not records:
            continue
        default = s_tir.Schedule(task.mod)
        backend.template(task.kind)(default)
        mine: dict[str, float] = {}

        def seconds(rec, mine=mine):
            return mine.get(str(rec.trace), _mean_secs(rec))

        def retime(rec, mine=mine, k=k, task=task):
            sch = s_tir.Schedule(task.mod)
            rec.trace.apply_to_schedule(sch, remove_postproc=False)
            samples = [_time(sch.mod["main"], backend.tvm_target) for _ in range(rounds)]
            # Ranked as the database will rank it: by the mean of the stored samples (each a
            # median of 7 repeats); a median here could disagree with the database's order.
            mine[str(rec.trace)] = float(np.mean(samples))
            retimed[(k, str(rec.trace))] = samples

        for rec in records:  # the default template's record, timed here as well
            if str(rec.trace) == str(default.trace):
                retime(rec)
        runner_best = min(_mean_secs(r) for r in records)
        for _ in range(max_checks):
            best = min(records, key=seconds)
            if str(best.trace) in mine:
                break
            retime(best)
        best = min(records, key=seconds)
        logger.info("%s: best record %.4f ms timed here (the runner's best: %.4f ms)",
                    task.name, seconds(best) * 1e3, runner_best * 1e3)
    if not retimed:
        return

    def fill(new: ms.database.Database) -> None:
        for rec in db.get_all_tuning_records():
            k = next((k for k, w in enumerate(workloads) if rec.workload.same_as(w)), None)
            secs = retimed.get((k, str(rec.trace)), rec.run_secs)
            new.commit_tuning_record(ms.database.TuningRecord(
                rec.trace, new.commit_workload(rec.workload.mod), secs, rec.target,
                rec.args_info))

    replace_records(work_dir, fill)


def _context(task: Task, backend, seed: int | None) -> ms.TuneContext:
    # The template samples register tiles (the tile-size mutator explores them) and an unroll
    # depth (a categorical on the root block: the unroll mutator, and the postprocessor that
    # turns it into ``pragma_auto_unroll_max_step``).
    space = ms.space_generator.ScheduleFn(
        backend.schedule_space(task.kind), sch_rules=[],
        postprocs=[ms.postproc.RewriteParallelVectorizeUnroll()],
        mutator_probs={ms.mutator.MutateTileSize(): 0.75, ms.mutator.MutateUnroll(): 0.25})
    # A small population: the template's space is small, and the default (512 samples,
    # 50 unmeasured before each round) costs a minute per task for nothing.
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=64, init_min_unmeasured=8, genetic_num_iters=2, max_fail_count=3)
    return ms.TuneContext(task.mod, target=backend.tvm_target, space_generator=space,
                          search_strategy=strategy, task_name=task.name,
                          rand_state=-1 if seed is None else seed, num_threads=1)


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
    runner : "local", "model", "KEY@HOST:PORT", RemoteDevice or tvm.s_tir.meta_schedule.Runner
        Where candidates are timed: this CPU (default for a target that runs here), a device
        registered with a TVM RPC tracker (a board running ``tvm.exec.rpc_server --tracker``;
        ``RPCDevice`` on loopback), or ``"model"`` (default for an aarch64 board that is not
        this host): the llvm-mca model of the board's core scores each candidate's
        xor-popcount loop (:mod:`tvm_qnn.tuning.model_runner`). Candidates that fail or time
        out are logged and recorded as failed.
    timeout : float
        Seconds a candidate (and an RPC session) may take before it counts as failed.
    seed : int, optional
        Seed of the search, for reproducible runs.

    Returns
    -------
    tvm.s_tir.meta_schedule.Database
        Pass it (or ``work_dir``) to ``tvm_qnn.compile(..., tuning_db=...)``;
        :func:`tune_report` gives the table of tuned vs default times. For ``"accel"``: a
        dict of layer name → tiling record (:func:`tvm_qnn.tuning.accel.tune_accel`, the
        simulator's cycle count is the runner); pass ``work_dir`` to ``compile``.
    """
    from ..compiler import lower_for_tuning
    from ..frontend import load_model
    from ..target import resolve_target

    if trials < 1:
        raise TvmQnnError(f"trials={trials}: at least 1")
    backend = resolve_target(target)
    if getattr(backend, "config", None) is not None:  # the accelerator: tilings, simulated
        from .accel import tune_accel

        return tune_accel(model, backend, work_dir, trials=trials, shapes=shapes,
                          example_inputs=example_inputs)
    tasks = extract_tasks(lower_for_tuning(load_model(model, shapes, example_inputs), backend))
    if runner in (None, "model") and _modelled_board(backend) is not None \
            and not backend.runs_here():
        # llvm-mca scores the xor-popcount loop; an integer kernel has none.
        for task in [t for t in tasks if t.integer]:
            logger.info("%s: integer kernel, which the llvm-mca model does not score: "
                        "default template", task.name)
        tasks = [t for t in tasks if not t.integer]
    if not tasks:
        raise TvmQnnError("the model has no bit-serial layer to tune")
    work_dir = os.fspath(work_dir)
    db = open_database(work_dir, create=True)
    _check_free_space(work_dir)
    runner = _runner(runner, timeout, backend, tasks)
    pending, budgets = [], []
    for task in tasks:
        done = len(_records(db, task.mod))
        if done == 0:
            _measure_default(task, backend, db, runner)
            _check_written(db, work_dir)
            done = len(_records(db, task.mod))
        if done >= trials:
            logger.info("%s: %d trials in the database, skipped", task.name, done)
        else:
            pending.append(task)
            budgets.append(trials - done)
    if not pending:
        return db
    # One MetaSchedule run for all tasks: its builder and runner worker pools start once.
    progress = _Progress(pending, budgets)
    try:
        ms.tune_tasks(tasks=[_context(t, backend, seed) for t in pending],
                      task_weights=[float(len(t.layers)) for t in pending], work_dir=work_dir,
                      max_trials_global=sum(budgets), max_trials_per_task=max(budgets),
                      num_trials_per_iter=min(16, max(budgets)), database=db,
                      builder=_builder(runner), runner=runner,
                      cost_model="xgb", task_scheduler="round-robin",
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                         progress, _WriteCheck(db, work_dir)])
    except Exception as err:  # noqa: BLE001 - a callback's TvmQnnError comes back wrapped
        text = str(err)
        start = text.rfind(f"{work_dir}: a tuning record could not be written")
        if isinstance(err, TvmQnnError) or start < 0:
            raise
        raise TvmQnnError(text[start:].splitlines()[0]) from None
    finally:
        progress.close()
    if backend.runs_here() and isinstance(runner, ms.runner.LocalRunner):
        _retime_best(pending, backend, work_dir)
        db = open_database(work_dir)
    return db


def tune_report(model, target="x86", tuning_db="tvm_qnn_tuning", *, shapes=None,
                example_inputs=None, time_kernels: bool = True) -> list[TaskResult]:
    """One row per task: trials in the database, tuned and default kernel time.

    Times are measured on this host, or for an aarch64 board that is not this host the
    llvm-mca model of its xor-popcount loop (as the model runner scored them).
    """
    from ..compiler import lower_for_tuning
    from ..frontend import load_model
    from ..target import resolve_target

    backend = resolve_target(target)
    db = open_database(tuning_db)
    tasks = extract_tasks(lower_for_tuning(load_model(model, shapes, example_inputs), backend))
    rows = []
    for task in tasks:
        best = default = None
        sch = db.query_schedule(task.mod, backend.tvm_target, "main")
        timer = _time if backend.runs_here() else _model_time(backend, task)
        if time_kernels and timer is not None:
            default = timer(backend.schedule(task.kind, task.mod["main"]), backend.tvm_target)
            if sch is not None:
                best = timer(sch.mod["main"], backend.tvm_target)
        rows.append(TaskResult(task.name, task.kind, task.bits, len(_records(db, task.mod)),
                               None if best is None else best * 1e3,
                               None if default is None else default * 1e3))
    return rows


__all__ = ["TaskResult", "tune", "tune_report"]
