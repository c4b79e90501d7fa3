# SPDX-License-Identifier: Apache-2.0
"""The interface every tvm_qnn target implements (one subclass per folder of ``target/``)."""

from __future__ import annotations

import abc

import tvm


class QnnTarget(abc.ABC):
    """How one kind of device compiles, schedules and runs bit-serial layers."""

    #: alias users pass to ``tvm_qnn.compile(target=...)``
    name: str = ""
    #: output channels per packed weight vector (the weight layout's inner dimension)
    oc_block: int = 16
    #: bits per packed word of the bit-planes (64: popcount on 64-bit lanes; 8: byte lanes)
    word_bits: int = 64
    #: convs with at least this many branches (M·K) get a plain integer kernel; None: never
    integer_min_branches: int | None = None
    #: output channels per weight vector for single-branch (W1A1) layers; None: ``oc_block``
    single_branch_oc_block: int | None = None

    def plan(self, layer, **kwargs):
        """``plan_layer`` of ``layer`` with this target's layout (weights, words, kernels)."""
        from ..topi.layer import plan_layer

        kwargs.setdefault("integer_min_branches", self.integer_min_branches)
        return plan_layer(layer, self.oc_block, self.word_bits,
                          single_branch_oc_block=self.single_branch_oc_block, **kwargs)

    @property
    @abc.abstractmethod
    def tvm_target(self) -> tvm.target.Target:
        """The TVM target code is generated for."""

    @abc.abstractmethod
    def schedule(self, kind: str, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        """Schedule one bit-serial layer PrimFunc (``kind`` is ``conv2d`` or ``dense``)."""

    def schedule_space(self, kind: str):
        """The tuning template of ``kind``: ``f(sch)`` scheduling with sampled knobs.

        MetaSchedule searches the decisions of its sampling instructions (tvm_qnn.tune).
        """
        raise NotImplementedError(f"{self.name}: no tuning template")

    def describe(self) -> str:
        """One line for logs: the alias and what it resolved to."""
        return f"{self.name} ({self.tvm_target})"

    @property
    def alias(self) -> str:
        """The string that selects this target again (stored with exported libraries)."""
        return self.name

    #: gcc that links libraries for the target (None: the host's default)
    cross_compiler: str | None = None

    def runs_here(self) -> bool:
        """True if this host can run the target's code natively."""
        return True

    def emulator(self):
        """A device that runs the target's code on this host, or None."""
        return None

    def schedule_keys(self) -> list[tuple[str, str]]:
        """Pre-tuned schedule folders for this device, most specific first: ``(key, level)``
        with level "exact device" or "device class" (:mod:`tvm_qnn.tuning.pretuned`)."""
        return []

    def offload_pass(self, tilings: dict | None = None):
        """A fresh Relax pass moving layers to an accelerator (run before the CPU rewrite), or
        None for a plain CPU target. ``tilings``: tuned tiling records
        (:mod:`tvm_qnn.tuning.accel`)."""
        return None

    def export_library(self, module, path: str) -> None:
        """Write ``module`` as a shared library for the target."""
        if self.cross_compiler:
            from tvm.support import cc

            module.export_library(path, fcompile=cc.cross_compiler(self.cross_compiler))
        else:
            module.export_library(path)
