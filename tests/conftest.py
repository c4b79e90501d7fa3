# SPDX-License-Identifier: Apache-2.0
"""Shared test set-up: hypothesis profiles sized by where the suite runs.

``HYPOTHESIS_PROFILE`` picks one; without it, ``ci`` when ``CI`` is set (as CI runs
``make test``), else ``dev``:

* ``ci``: every property test at the budget the suite is sized for (about 20 minutes on
  2 cores for the whole suite);
* ``dev``: a quarter of it, for a quick local run (``-m "not slow"`` skips the slow tests too);
* ``thorough``: four times it.

A property test states its CI budget as ``@settings(max_examples=examples(n))``; the profile
scales it. Deadlines are off everywhere: an example's time is mostly TVM compiling a kernel.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# make test runs one worker process per core: one TVM thread each, or the workers' thread
# pools (a worker per core each, tvm_qnn's default) would fight over the cores. Run alone, the
# tests build code for one thread too (the targets' parallel threshold follows the threads,
# X86Target.for_threads), so hand-made records and compile agree either way; tests of several
# threads ask for them.
os.environ.setdefault("TVM_NUM_THREADS", "1")

SCALES = {"ci": 1.0, "dev": 0.25, "thorough": 4.0}
for _name in SCALES:
    settings.register_profile(_name, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if PROFILE not in SCALES:
    raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: one of {sorted(SCALES)}")
settings.load_profile(PROFILE)


def examples(ci_budget: int) -> int:
    """The number of examples of a property test whose CI budget is ``ci_budget``."""
    return max(1, round(ci_budget * SCALES[PROFILE]))


def pytest_report_header(config):  # noqa: ARG001 - pytest's hook signature
    return f"hypothesis profile: {PROFILE} (HYPOTHESIS_PROFILE or CI set it; see conftest.py)"


# The modules that take minutes, slowest first. They are collected first so that with
# parallel workers (``make test``: pytest-xdist, one module per worker at a time, in this
# order) no worker starts a long module when the others are nearly done.
SLOW_MODULES = (
    "test_tuning.py", "test_tutorials.py", "test_target_arm.py", "test_tuning_repair.py",
    "test_brevitas_models.py", "test_demo.py", "test_runtime_rpc.py",
    "test_bitserial_accel_rtl.py", "test_cli.py", "test_topi_layer.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a module
