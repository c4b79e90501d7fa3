# SPDX-License-Identifier: Apache-2.0
"""Tuning for a board we do not have: candidates scored by the llvm-mca model of its core.

The builder exports each candidate's assembly instead of a library (nothing runs), and
:class:`ModelRunner` turns it into modelled seconds with
:func:`tvm_qnn.target.arm.mca.kernel_seconds` for the board's ``-mcpu`` and clock. The search
then ranks candidates by that model, as it would by measurements. Every candidate is a
schedule of the same computation, so it computes the same bits; the tuned model is checked
under qemu by the tests.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ...topi.attrs import BRANCH_BLOCK, CHUNK_BLOCK
from .mca import kernel_seconds


def export_assembly(mod) -> str:
    """A MetaSchedule ``f_export``: the candidate's assembly in a file, its path returned.

    The file gets a directory of its own: MetaSchedule removes the artifact's whole
    directory once the candidate is measured.
    """
    path = os.path.join(tempfile.mkdtemp(prefix="tvm_qnn_candidate_"), "kernel.s")
    with open(path, "w", encoding="utf-8") as f:
        f.write(mod.inspect_source("asm"))
    return path


def popcount_bytes(func) -> int:
    """Bytes the layer PrimFunc ``func`` xor-popcounts (its branch work)."""
    sch = s_tir.Schedule(func)
    for name, word_bytes in ((CHUNK_BLOCK, 1), (BRANCH_BLOCK, None)):
        try:
            block = sch.get(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
            continue
        if word_bytes is None:  # 64-bit words: the branch block counts words
            word_bytes = 8
        return int(np.prod([int(iv.dom.extent) for iv in block.iter_vars])) * word_bytes
    raise ValueError("not a bit-serial layer PrimFunc (no branch block)")


def args_key(args_info) -> tuple:
    """A task's arguments (dtype, shape), which fix its branch work: the runner's task key."""
    return tuple((str(a.dtype), tuple(int(d) for d in a.shape)) for a in args_info)


@derived_object
class ModelRunner(ms.runner.PyRunner):
    """A MetaSchedule runner whose "measurement" is the llvm-mca model of ``board``.

    Parameters
    ----------
    board : tvm_qnn.target.arm.ArmBoard
        The board: its ``mcpu`` picks LLVM's scheduling model, ``clock_ghz`` scales cycles.
    work : dict
        :func:`args_key` of each task → its :func:`popcount_bytes` (a runner input says
        which task it belongs to only through its arguments).
    """

    def __init__(self, board, work: dict) -> None:
        super().__init__()
        self.board = board
        self.work = dict(work)

    #: MetaSchedule's builder hands the runner the candidate's assembly, not a library
    f_export = staticmethod(export_assembly)

    def run(self, runner_inputs):  # noqa: D102
        futures = []
        for inp in runner_inputs:
            try:
                with open(inp.artifact_path, encoding="utf-8") as f:
                    asm = f.read()
                work = self.work[args_key(inp.args_info)]
                secs = kernel_seconds(asm, work, self.board.mcpu, self.board.clock_ghz)
                futures.append(ms.runner.LocalRunnerFuture(res=[secs], error_message=None))
            except Exception as err:  # noqa: BLE001 - a bad candidate fails, tuning goes on
                futures.append(ms.runner.LocalRunnerFuture(res=None, error_message=str(err)))
        return futures
