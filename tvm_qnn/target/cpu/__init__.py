# SPDX-License-Identifier: Apache-2.0
"""What the LLVM CPU targets (x86, ARM) share: the TensorIR schedule templates and their
parameters (:class:`ScheduleConfig`)."""

from __future__ import annotations

from dataclasses import replace

from tvm import s_tir

from ...transform.pad_conv_columns import PadConvColumns
from ..base import QnnTarget
from .between_layers import CONV_VECTOR, schedule_between_layers
from .config import INTEGER_MIN_BRANCHES, UNROLL_STEPS, ScheduleConfig, parallel_threshold
from .schedule import packs_conv_input, schedule_conv2d, schedule_dense

__all__ = ["INTEGER_MIN_BRANCHES", "UNROLL_STEPS", "CpuTarget", "ScheduleConfig",
           "parallel_threshold", "schedule_conv2d", "schedule_dense"]

_TEMPLATES = {"conv2d": schedule_conv2d, "dense": schedule_dense}


class CpuTarget(QnnTarget):
    """An LLVM CPU target scheduled by :mod:`.schedule` with ``self.schedule_config``."""

    schedule_config: ScheduleConfig = ScheduleConfig()

    def template(self, kind: str, sample: bool = False):
        """``f(sch)``: the schedule of ``kind`` with this target's config (or sampled tiles)."""
        fn = _TEMPLATES[kind]

        def apply(sch):
            fn(sch, self.schedule_config, sample=sample)
            self.lower_instructions(sch)
            return sch

        return apply

    def lower_instructions(self, sch: s_tir.Schedule) -> None:
        """After the template: map what it left for the ISA onto the target's instructions
        (e.g. x86 tensorizes the int8-dot steps). Nothing by default."""

    def schedule(self, kind, func):
        sch = s_tir.Schedule(func)
        self.template(kind)(sch)
        return sch.mod["main"]

    def between_layer_passes(self):
        """A float conv of a ragged output width computes a few more columns, so that its
        columns split into the register tile's vectors."""
        return [PadConvColumns(CONV_VECTOR)]

    def schedule_between(self, func):
        return schedule_between_layers(func, parallel=self.schedule_config.parallel)

    def schedule_space(self, kind):
        """``f(sch) -> [sch, ...]``: the design spaces of ``kind`` (sampled register tiles and
        unroll depth), one per packing variant of a conv that packs its own input."""
        fn = _TEMPLATES[kind]

        def space(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
            variants = [(sch, self.schedule_config)]
            if kind == "conv2d" and packs_conv_input(sch):
                other = replace(self.schedule_config,
                                vector_pack=not self.schedule_config.vector_pack)
                variants.append((sch.copy(), other))
            for s, config in variants:
                fn(s, config, sample=True)
                self.lower_instructions(s)
            return [s for s, _ in variants]

        return space
