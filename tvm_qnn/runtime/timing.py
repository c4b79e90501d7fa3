# SPDX-License-Identifier: Apache-2.0
"""How tvm_qnn times things, in one place: compiled code by TVM's ``time_evaluator``, Python
callables (onnxruntime, PyTorch, the demo's peers) by the protocol of :class:`Timing`.

:class:`Timing`: warm-up calls, then ``rounds`` rounds of ``repeat`` samples, each sample the
mean of ``number`` back-to-back calls (``number`` chosen so a sample lasts ``min_sample_ms``);
a round's value is the median of its samples and the result the **minimum over rounds** (the
quietest round, for a shared machine). Python-called code includes its call overhead (a few
µs), as a user sees it.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """How long to measure (see the module docstring)."""

    rounds: int = 3
    repeat: int = 5
    min_sample_ms: float = 5.0
    min_number: int = 10
    warmup: int = 5


#: A short protocol for tests and CI-sized runs.
QUICK = Timing(rounds=1, repeat=2, min_sample_ms=0.2, min_number=2, warmup=1)


def evaluator_seconds(module, entry: str, device, *args, number: int = 10, repeat: int = 5,
                      min_repeat_ms: int = 0) -> float:
    """Median seconds per call of ``module[entry](*args)``, by TVM's ``time_evaluator``
    (``repeat`` samples of ``number`` calls, no Python overhead). ``module`` is a runtime
    module or a Relax ``VirtualMachine``."""
    timer = module.time_evaluator(entry, device, number=number, repeat=repeat,
                                  min_repeat_ms=min_repeat_ms)
    return float(np.median(timer(*args).results))


def measure_seconds(sample, estimate_s: float, timing: Timing = Timing()) -> float:
    """Seconds per call: the minimum over ``timing.rounds`` of ``sample(number, repeat)``
    (a median in seconds), ``number`` sized from the estimate ``estimate_s`` of one call."""
    number = max(timing.min_number,
                 math.ceil(timing.min_sample_ms * 1e-3 / max(estimate_s, 1e-7)))
    return min(sample(number, timing.repeat) for _ in range(timing.rounds))


def time_call(fn, timing: Timing = Timing()) -> float:
    """Seconds per call of the Python callable ``fn`` (:func:`measure_seconds`, after
    ``timing.warmup`` warm-up calls)."""
    for _ in range(timing.warmup):
        fn()
    start = time.perf_counter()
    fn()
    estimate = time.perf_counter() - start

    def sample(number, repeat):
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - start) / number)
        return statistics.median(samples)

    return measure_seconds(sample, estimate, timing)


__all__ = ["QUICK", "Timing", "evaluator_seconds", "measure_seconds", "time_call"]
