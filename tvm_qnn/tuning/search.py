# SPDX-License-Identifier: Apache-2.0
"""One MetaSchedule search over the pending tasks of :func:`tvm_qnn.tune`: the tuning context
of each task (our template as the design space, a small evolutionary population), a progress
bar per task, and the run itself."""

from __future__ import annotations

import contextlib
import logging
import sys
import types

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from .disk import WriteCheck
from .tasks import Task

logger = logging.getLogger("tvm_qnn")


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


_TENSOR_INTRIN = "tvm.s_tir.tensor_intrin"


@contextlib.contextmanager
def _without_tensor_intrinsics():
    """While inside, ``import tvm.s_tir.tensor_intrin`` finds an empty placeholder.

    ``TuneContext`` imports that package, which registers every tensor intrinsic of every
    target by parsing hundreds of TVMScript functions: measured 52 s on a Zen 3 core, once per
    process, for intrinsics our templates never tensorize with. The placeholder is removed
    afterwards, so a later real import of the package works as usual.
    """
    if _TENSOR_INTRIN in sys.modules:
        yield
        return
    placeholder = types.ModuleType(_TENSOR_INTRIN)
    sys.modules[_TENSOR_INTRIN] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(_TENSOR_INTRIN) is placeholder:
            del sys.modules[_TENSOR_INTRIN]


def _context(task: Task, qnn_target, seed: int | None) -> ms.TuneContext:
    # The template samples register tiles (the tile-size mutator explores them) and an unroll
    # depth (a categorical on the root block: the unroll mutator, and the postprocessor that
    # turns it into ``pragma_auto_unroll_max_step``).
    space = ms.space_generator.ScheduleFn(
        qnn_target.schedule_space(task.kind), sch_rules=[],
        postprocs=[ms.postproc.RewriteParallelVectorizeUnroll()],
        mutator_probs={ms.mutator.MutateTileSize(): 0.75, ms.mutator.MutateUnroll(): 0.25})
    # A small population: the template's space is small, and the default (512 samples,
    # 50 unmeasured before each round) costs a minute per task for nothing.
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=64, init_min_unmeasured=8, genetic_num_iters=2, max_fail_count=3)
    return ms.TuneContext(task.mod, target=qnn_target.tvm_target, space_generator=space,
                          search_strategy=strategy, task_name=task.name,
                          rand_state=-1 if seed is None else seed, num_threads=1)


def search(pending: list[Task], budgets: list[int], qnn_target, seed, work_dir: str, db,
            workers) -> None:
    """One MetaSchedule run for all pending tasks, with ``workers()``' runner and builder:
    their worker pools start once."""
    runner, builder = workers()
    progress = _Progress(pending, budgets)
    try:
        with _without_tensor_intrinsics():
            ms.tune_tasks(tasks=[_context(t, qnn_target, seed) for t in pending],
                          task_weights=[float(len(t.layers)) for t in pending],
                          work_dir=work_dir, max_trials_global=sum(budgets),
                          max_trials_per_task=max(budgets),
                          num_trials_per_iter=min(16, max(budgets)), database=db,
                          builder=builder, runner=runner,
                          cost_model="xgb", task_scheduler="round-robin",
                          measure_callbacks=[
                              *ms.measure_callback.MeasureCallback.create("default"),
                              progress, WriteCheck(db, work_dir)])
    except Exception as err:  # noqa: BLE001 - a callback's TvmQnnError comes back wrapped
        text = str(err)
        start = text.rfind(f"{work_dir}: a tuning record could not be written")
        if isinstance(err, TvmQnnError) or start < 0:
            raise
        raise TvmQnnError(text[start:].splitlines()[0]) from None
    finally:
        progress.close()


__all__ = ["search"]
