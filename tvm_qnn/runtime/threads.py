# SPDX-License-Identifier: Apache-2.0
"""How many threads compiled code runs on.

TVM's thread pool starts with half the logical CPUs when ``TVM_NUM_THREADS`` is unset (it
assumes two hardware threads per core): one thread on a 2-core machine without SMT, so a
compiled model used half the machine. tvm_qnn runs its artifacts on the physical cores this
process may use, unless ``TVM_NUM_THREADS`` or ``threads=`` says otherwise.
"""

from __future__ import annotations

import functools
import logging
import os

from ..errors import TvmQnnError

logger = logging.getLogger("tvm_qnn")


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """The physical cores among the CPUs this process may run on (at least 1)."""
    logical = len(os.sched_getaffinity(0))
    try:
        import psutil

        per_core = max(1, (psutil.cpu_count(logical=True) or 1)
                       // (psutil.cpu_count(logical=False) or 1))
    except ImportError:  # psutil comes with TVM's MetaSchedule; without it assume no SMT
        per_core = 1
    return max(1, logical // per_core)


def reserve_pool() -> None:
    """Size TVM's thread pool for the physical cores before TVM starts it (``import tvm_qnn``
    does): the pool fixes its workers when it starts, at ``TVM_NUM_THREADS`` or else half the
    logical CPUs, and :func:`use_threads` can use fewer later, never more. Without this, a
    2-core machine without SMT ran every artifact on one thread whatever ``threads=`` said
    (measured: ResNet-18 4w4a 3.8 ms at ``threads=1`` and at ``threads=2``). A
    ``TVM_NUM_THREADS`` the user set is kept."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


def default_threads() -> int:
    """``TVM_NUM_THREADS`` when set, else :func:`physical_cores`."""
    env = os.environ.get("TVM_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise TvmQnnError(f"TVM_NUM_THREADS={env!r}: a number of threads") from None
    return physical_cores()


_current: int | None = None


def use_threads(threads: int | None) -> int:
    """Size TVM's thread pool for the next run (``None``: :func:`default_threads`); returns
    the number used. The pool is process-wide and resized only when the number changes."""
    global _current
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise TvmQnnError(f"threads={threads}: at least 1")
    if n != _current:
        import tvm

        # Unless the user asked for it, TVM must not pin threads: it would pin the calling
        # (main) thread to one CPU, for whatever else the process runs too.
        os.environ.setdefault("TVM_BIND_THREADS", "0")
        tvm.get_global_func("runtime.config_threadpool")(1, n)  # 1: every core alike
        _current = n
        got = int(tvm.get_global_func("runtime.NumThreads")())
        if got < n:
            logger.warning("running on %d threads, not %d: TVM's thread pool started with %d "
                           "workers (set TVM_NUM_THREADS before the first TVM kernel runs to "
                           "allow more)", got, n, got)
    return n


__all__ = ["default_threads", "physical_cores", "reserve_pool", "use_threads"]
