# SPDX-License-Identifier: Apache-2.0
"""Where tuning candidates are built and timed: this CPU, a device behind a TVM RPC tracker,
or a model of the target's device (``QnnTarget.model_runner``: the llvm-mca model of an ARM
board)."""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import TvmQnnError
from ..runtime.rpc import RemoteDevice

# Candidates of one template differ by a few percent: each repeat runs >= 10 ms so the noise
# of a shared machine does not pick the winner (measured: with 3 bare repeats the "best"
# record was up to 15 % slower than the default template when timed again).
EVALUATOR = ms.runner.EvaluatorConfig(number=1, repeat=5, min_repeat_ms=10)


def make_runner(runner, timeout: float, qnn_target, funcs=()) -> ms.runner.Runner:
    """A MetaSchedule runner for ``runner``: None (this CPU when the target runs here, else
    the target's model), ``"local"``, ``"model"``, ``"KEY@HOST:PORT"``, a
    :class:`~tvm_qnn.runtime.rpc.RemoteDevice` or a Runner. ``funcs``: the tasks' PrimFuncs
    (a model runner sizes each task's work from them)."""
    here = qnn_target.why_not_here()
    if runner == "model" or (runner is None and here):
        model = qnn_target.model_runner(list(funcs))
        if model is not None:
            return model
        if runner == "model":
            raise TvmQnnError(f"runner='model' scores candidates with a model of the device "
                              f"(llvm-mca for aarch64 boards); {qnn_target.describe()} has none")
        raise TvmQnnError(f"{qnn_target.describe()}: this host cannot run its code ({here}) and "
                          "there is no model of it; tune on a device that can, over TVM RPC "
                          "(runner='KEY@HOST:PORT')")
    if runner is None or runner == "local":
        return ms.runner.LocalRunner(evaluator_config=EVALUATOR, timeout_sec=timeout)
    if isinstance(runner, str):
        runner = RemoteDevice.parse(runner)
    if isinstance(runner, RemoteDevice):
        # Fails at once, naming the tracker's devices, when no tracker answers or none of
        # its servers has the key (MetaSchedule would wait on each candidate to time out).
        runner.check()
        # A candidate whose session cannot start (server gone) or that hangs is killed after
        # ``timeout`` and recorded as failed: tuning goes on, a re-run measures it again.
        from tvm.support.popen_pool import PopenPoolExecutor

        config = ms.runner.RPCConfig(tracker_host=runner.tracker_host,
                                     tracker_port=runner.tracker_port,
                                     tracker_key=runner.key, session_timeout_sec=int(timeout))
        rpc_runner = ms.runner.RPCRunner(config, evaluator_config=EVALUATOR)
        # RPCRunner's worker pool has no timeout: with the server gone, the tracker request
        # blocks forever and so would tuning. A pool that kills the worker after ``timeout``
        # turns that into a failed candidate.
        rpc_runner.pool = PopenPoolExecutor(max_workers=1, timeout=timeout)
        return rpc_runner
    return runner


def _build(mod, target, _params):
    """MetaSchedule's default build without its ``import tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic of every target and costs ~20 s in each
    fresh builder process (the builder pool restarts for every batch): most of a trial.
    """
    from tvm.driver import build

    return build(mod, target=target)


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's ``LocalBuilder``, keeping its worker processes from batch to batch.

    ``LocalBuilder`` starts a new pool for every batch (and one more to check its functions
    when it is made), and each worker imports TVM (and, through tvm_ffi, PyTorch): measured
    5-6 s per pool on Zen 3, a third of a one-task tune. Here one pool serves ``reuse``
    batches, then is replaced: ``LocalBuilder`` restarts its pool for a memory leak of
    long-lived workers, and a bounded reuse keeps that bounded too.
    """

    def __init__(self, f_build=None, f_export=None, max_workers: int | None = None,
                 timeout_sec: float = 30.0, reuse: int = 16):
        super().__init__()
        self.f_build = f_build
        self.f_export = f_export
        self.max_workers = max_workers or ms.utils.cpu_count(logical=True)
        self.timeout_sec = timeout_sec
        self.reuse = reuse
        self._pool = None
        self._batches = 0

    def build(self, build_inputs: list) -> list:
        from tvm.s_tir.meta_schedule.builder.local_builder import (
            _serialize_params,
            _worker_func,
        )
        from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

        if self._pool is None or self._batches >= self.reuse:
            self.close()
            self._pool = PopenPoolExecutor(max_workers=self.max_workers,
                                           timeout=self.timeout_sec)
        self._batches += 1
        jobs = [(self.f_build, self.f_export, b.mod, b.target, _serialize_params(b.params))
                for b in build_inputs]
        results = []
        for done in self._pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
            if done.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(done.value, None))
            elif done.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"LocalBuilder: Timeout, killed after {self.timeout_sec} seconds"))
            else:
                results.append(ms.builder.BuilderResult(
                    None, f"LocalBuilder: An exception occurred\n{done.value}"))
        return results

    def close(self) -> None:
        """Stop the worker processes (a later ``build`` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
        self._pool = None
        self._batches = 0


def make_builder(runner=None) -> PooledBuilder:
    """The builder for ``runner``: a library per candidate, or what the runner reads instead
    (its ``f_export``: a model runner reads the assembly). ``close()`` it when done."""
    return PooledBuilder(f_build=_build, f_export=getattr(runner, "f_export", None))


__all__ = ["EVALUATOR", "PooledBuilder", "make_builder", "make_runner"]
