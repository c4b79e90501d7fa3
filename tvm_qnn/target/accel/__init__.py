# SPDX-License-Identifier: Apache-2.0
"""The accelerator target: quantized layers on the bit-serial accelerator, the rest on the host.

``tvm_qnn.compile(model, target="accel")`` offloads every conv2d / dense the accelerator can
run (:mod:`.lower` says which, and why not) and compiles the rest of the model, the epilogues
and the layers it cannot run for this host's CPU. The accelerator is the C++ simulator of
docs/accelerator.md: ``Artifact.run`` is functionally exact and ``Artifact.profile`` reports
its cycle model per layer. ``"accel:<path/to/config.json>"`` picks another configuration.
"""

from __future__ import annotations

from ...accel import AccelConfig
from ...errors import TvmQnnError
from ..base import QnnTarget
from ..x86 import X86Target

__all__ = ["AccelTarget"]


class AccelTarget(QnnTarget):
    """The simulated bit-serial accelerator with this host's x86 CPU as the host."""

    name = "accel"

    def __init__(self, config: AccelConfig | str | None = None, host: QnnTarget | None = None):
        if config is None or isinstance(config, str):
            config = AccelConfig.load(config or None)
        self.config = config
        self.host = host or X86Target()
        self.oc_block = self.host.oc_block
        self.word_bits = self.host.word_bits
        # Layers the accelerator cannot take stay bit-serial on the host (as the simulator's
        # P would be): one kind of kernel per layer, whichever device runs it.
        self.integer_min_branches = None

    @property
    def tvm_target(self):
        return self.host.tvm_target

    def schedule(self, kind, func):
        return self.host.schedule(kind, func)

    def schedule_space(self, kind):
        return self.host.schedule_space(kind)

    def schedule_keys(self):
        return self.host.schedule_keys()  # the layers left on the host CPU

    def offload_pass(self, tilings: dict | None = None):
        from ...transform.offload_accel import OffloadAccel

        return OffloadAccel(self.config, tilings)

    def describe(self) -> str:
        cfg = self.config
        return (f"accel ({cfg.name}: {cfg.block_out}x{cfg.block_in}-bit xor-popcount GEMM "
                f"core at {cfg.clock_mhz:g} MHz, simulated; host {self.host.describe()})")

    def export_library(self, module, path: str) -> None:
        raise TvmQnnError("a model compiled for the simulated accelerator runs in this process "
                          "(its layers call the simulator); it cannot be exported as a library")
