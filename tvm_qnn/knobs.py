# SPDX-License-Identifier: Apache-2.0
"""Environment knobs of tvm_qnn, all in one place.

``TVM_QNN_DATA_DIR``   folder with the Fashion-MNIST IDX files (default: Debian's location)
``TVM_QNN_WORK_DIR``   where training runs keep checkpoints by default (default: ./work_dirs)
``TVM_QNN_CACHE_DIR``  built helpers kept between runs, e.g. the emulated aarch64 device
                      (default: ~/.cache/tvm_qnn)
``TVM_QNN_SCHEDULES``  pre-tuned schedules: a folder to search instead of the shipped
                      ``schedules/``, or ``off`` to use the default templates
``TVM_QNN_X86_CPU``    the CPU the ``x86`` target compiles for instead of this host's (an
                      LLVM CPU name, e.g. ``haswell``: AVX2 code, as ``x86:haswell``); the
                      test suite run so is what an AVX2-only machine runs
``TVM_NUM_THREADS``    TVM's own: threads of the compiled code (default here: the physical
                      cores; ``compile(threads=)`` and ``run(threads=)`` override it)
"""

from __future__ import annotations

import os


def data_dir() -> str | None:
    """``TVM_QNN_DATA_DIR`` or None."""
    return os.environ.get("TVM_QNN_DATA_DIR") or None


def work_dir() -> str:
    """``TVM_QNN_WORK_DIR`` or ``work_dirs``."""
    return os.environ.get("TVM_QNN_WORK_DIR", "work_dirs")


def cache_dir() -> str:
    """``TVM_QNN_CACHE_DIR`` or ``~/.cache/tvm_qnn``."""
    return os.environ.get("TVM_QNN_CACHE_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "tvm_qnn"))


def x86_cpu() -> str | None:
    """``TVM_QNN_X86_CPU`` or None."""
    return os.environ.get("TVM_QNN_X86_CPU") or None


def schedules_dir() -> str | None:
    """``TVM_QNN_SCHEDULES`` or None."""
    return os.environ.get("TVM_QNN_SCHEDULES") or None


_PACKAGE_SCHEDULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedules")
_CHECKOUT_SCHEDULES = os.path.join(os.path.dirname(os.path.dirname(_PACKAGE_SCHEDULES)),
                                   "schedules")


def schedules_dirs() -> list[str]:
    """Folders searched for pre-tuned schedules: ``TVM_QNN_SCHEDULES`` if set, else the
    installed package's ``tvm_qnn/schedules`` and a source checkout's ``schedules/``."""
    override = schedules_dir()
    if override:
        return [override]
    return [d for d in dict.fromkeys([_PACKAGE_SCHEDULES, _CHECKOUT_SCHEDULES])
            if os.path.isdir(d)]
