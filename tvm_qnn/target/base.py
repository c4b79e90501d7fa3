# SPDX-License-Identifier: Apache-2.0
"""The interface every tvm_qnn target implements (one subclass per folder of ``target/``).

A target knows everything about its device and nothing outside it needs to: the aliases that
select it (:meth:`QnnTarget.parse`), its kernel :class:`~tvm_qnn.topi.layout.Layout`, how its
kernels are scheduled and tuned, where its pre-tuned schedules are looked up, which layers it
moves to an accelerator, and how its compiled artifacts run and are exported.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import tvm

from ..runtime.library import write_library
from ..topi.layer import LayerPlan, QuantizedLayer, plan_layer
from ..topi.layout import Layout
from ..topi.thresholds import MAX_THRESHOLDS


@dataclass(frozen=True)
class Offload:
    """The layers of one model that run on an accelerator, decided before compiling.

    ``rewrite`` is the Relax pass that replaces them (it runs before the CPU rewrite),
    ``drivers`` maps each offloaded layer's name to its driver (``run``, ``profile``),
    ``reasons`` says, for each layer left on the CPU, why, and ``tuned`` whether the tuning
    folder held the accelerator's own records (then it may hold no kernel records).
    """

    rewrite: tvm.transform.Pass
    drivers: Mapping[str, object] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    tuned: bool = False


class QnnTarget(abc.ABC):
    """How one kind of device compiles, schedules, tunes and runs bit-serial layers."""

    #: the alias users pass to ``tvm_qnn.compile(target=...)`` (without its ``:<detail>``)
    name: ClassVar[str] = ""
    #: one line for the error of an unknown target: the aliases this class parses
    aliases: ClassVar[str] = ""
    #: how the target lays out its kernels (weight vectors, words, integer kernel)
    layout: Layout = Layout()
    #: gcc that links libraries for the target (None: the host's default)
    cross_compiler: str | None = None
    #: the kernel families tuning compares for a conv (one or none: nothing to compare)
    kernel_families: tuple[str, ...] = ()

    # -- selecting the target ----------------------------------------------------------------

    @classmethod
    def register_tensor_intrinsics(cls) -> None:
        """Register the TensorIntrins the target's schedules may tensorize with (tuning
        records replay them; none by default)."""
        return None

    @classmethod
    @abc.abstractmethod
    def parse(cls, spec) -> QnnTarget | None:
        """This class's target for ``spec`` (an alias string, a TVM ``Target`` or a target
        dict), None when ``spec`` names another kind of target. Raises ``TvmQnnError`` for a
        spec of this kind that is wrong (an unknown board, CPU or file)."""

    @property
    def alias(self) -> str:
        """The string that selects this target again (stored with exported libraries):
        ``parse(alias)`` gives an equal target."""
        return self.name

    @property
    @abc.abstractmethod
    def tvm_target(self) -> tvm.target.Target:
        """The TVM target code is generated for."""

    def describe(self) -> str:
        """One line for logs: the alias and what it resolved to."""
        return f"{self.name} ({self.tvm_target})"

    # -- kernels -------------------------------------------------------------------------

    def plan(self, layer: QuantizedLayer, max_thresholds: int = MAX_THRESHOLDS) -> LayerPlan:
        """``plan_layer`` of ``layer`` with this target's layout (weights, words, kernels)."""
        return plan_layer(layer, self.layout, max_thresholds)

    @abc.abstractmethod
    def schedule(self, kind: str, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        """Schedule one layer kernel (``kind`` is ``conv2d`` or ``dense``) by the default
        template (no tuning record)."""

    def between_layer_passes(self) -> list[tvm.transform.Pass]:
        """Relax passes for the ops between layers, run before TVM legalizes them (e.g. to
        give a float conv a shape the target's schedule takes); none by default."""
        return []

    def schedule_between(self, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
        """A default schedule for ``func``, an op between layers as TVM legalized it (a float
        first conv, BatchNorm, pooling); None leaves it as it is."""
        return None

    def schedule_space(self, kind: str):
        """The tuning template of ``kind``: ``f(sch) -> [sch, ...]`` scheduling with sampled
        decisions, whose decisions MetaSchedule searches (:func:`tvm_qnn.tune`)."""
        raise NotImplementedError(f"{self.name}: no tuning template")

    # -- where schedules come from, and how they are tuned -----------------------------------

    def schedule_keys(self) -> list[tuple[str, str]]:
        """Pre-tuned schedule folders for this device, most specific first: ``(key, level)``
        with level "exact device" or "device class" (:mod:`tvm_qnn.tuning.pretuned`)."""
        return []

    def model_runner(self, funcs) -> object | None:
        """A MetaSchedule runner that scores candidates with a model of the device instead of
        running them (for a device this host cannot run), given the tasks' PrimFuncs; None
        when the target has no such model."""
        return None

    def model_seconds(self, scheduled: tvm.tirx.PrimFunc,
                      workload: tvm.tirx.PrimFunc) -> float | None:
        """Modelled seconds of ``scheduled``, a schedule of the layer kernel ``workload`` (what
        :meth:`model_runner` scores), None when the model cannot score it."""
        return None

    def can_model(self, func: tvm.tirx.PrimFunc) -> bool:
        """Whether :meth:`model_runner` can score the kernel ``func``."""
        return False

    def tune_layers(self, mod: tvm.IRModule, work_dir: str, trials: int) -> dict | None:
        """Tune what the target's own lowering decides (not TensorIR schedules: e.g. the
        accelerator's tilings) and return ``{layer: record}``; None for a target whose kernels
        are TensorIR, which :func:`tvm_qnn.tune` searches with MetaSchedule."""
        return None

    def offload(self, mod: tvm.IRModule, tuning_db=None) -> Offload | None:
        """Which layers of ``mod`` run on an accelerator (with ``tuning_db``'s records, or the
        target's shipped ones), or None for a plain CPU target."""
        return None

    # -- how artifacts run ------------------------------------------------------------------

    def why_not_here(self) -> str:
        """Why this host cannot run the target's code natively ('' when it can)."""
        return ""

    def for_threads(self, threads: int) -> QnnTarget:
        """This target for code that runs on ``threads`` threads (the CPU targets parallelize
        smaller layers for several); itself by default."""
        return self

    def runs_here(self) -> bool:
        """True if this host can run the target's code natively."""
        return not self.why_not_here()

    def emulator(self):
        """A device that runs the target's code on this host, or None."""
        return None

    def rpc_device(self, key: str | None = None, tracker_port: int | None = None):
        """The emulated device served over TVM RPC on loopback (not started; a context
        manager, :class:`~tvm_qnn.runtime.rpc.RPCDevice`), the way a board serves it, or None
        when the target has no emulated device. ``key``: the device key (default: the
        target's)."""
        return None

    def export_library(self, module, path: str) -> None:
        """Write ``module`` as a shared library for the target
        (:func:`~tvm_qnn.runtime.library.write_library`: a full disk is an error)."""
        fcompile = None
        if self.cross_compiler:
            from tvm.support import cc

            fcompile = cc.cross_compiler(self.cross_compiler)
        write_library(module, path, fcompile)
