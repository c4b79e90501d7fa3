# SPDX-License-Identifier: Apache-2.0
"""The accelerator target: quantized layers on the bit-serial accelerator, the rest on the host.

``tvm_qnn.compile(model, target="accel")`` offloads every conv2d / dense the accelerator can
run (:mod:`.tiling` and :mod:`.lower` say which, and why not) and compiles the rest of the
model, the epilogues and the layers it cannot run for this host's CPU. The accelerator is the
C++ simulator of docs/accelerator.md (:mod:`tvm_qnn.bitserial_accel`): ``Artifact.run`` is
functionally exact and ``Artifact.profile`` reports its cycle model per layer.
``"accel:<path/to/config.json>"`` picks another configuration.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

from ...bitserial_accel import AccelConfig
from ...errors import NotOffloadable, TvmQnnError
from ...transform import find_layers
from ...transform.offload_accel import OffloadAccel, OffloadedLayer
from ..base import Offload, QnnTarget
from ..x86 import X86Target
from .driver import AccelLayer
from .lower import lower_layer
from .tiling import TilingChoice
from .tilings import find_tilings, tiling_key, tune_tilings

__all__ = ["AccelTarget"]

logger = logging.getLogger("tvm_qnn")


class AccelTarget(QnnTarget):
    """The simulated bit-serial accelerator with this host's x86 CPU as the host."""

    name = "accel"
    aliases = "'accel' (the simulated accelerator), 'accel:<config.json>'"

    def __init__(self, config: AccelConfig | str | None = None, host: QnnTarget | None = None):
        self.config_path = config if isinstance(config, str) else None
        if config is None or isinstance(config, str):
            config = AccelConfig.load(config or None)
        self.config = config
        self.host = host or X86Target()
        # Layers the accelerator cannot take stay bit-serial on the host (as the simulator's
        # P would be): one kind of kernel per layer, whichever device runs it.
        self.layout = replace(self.host.layout, integer_min_branches=None,
                              dot8_min_branches=None)

    @classmethod
    def parse(cls, spec):
        if isinstance(spec, str) and (spec == cls.name or spec.startswith(f"{cls.name}:")):
            return cls(spec.partition(":")[2] or None)
        return None

    @property
    def alias(self) -> str:
        return f"{self.name}:{self.config_path}" if self.config_path else self.name

    @property
    def tvm_target(self):
        return self.host.tvm_target

    def schedule(self, kind, func):
        return self.host.schedule(kind, func)

    def schedule_space(self, kind):
        return self.host.schedule_space(kind)

    def between_layer_passes(self):
        return self.host.between_layer_passes()

    def schedule_between(self, func):
        return self.host.schedule_between(func)

    def schedule_keys(self):
        return self.host.schedule_keys()  # the layers left on the host CPU

    def tune_layers(self, mod, work_dir, trials):
        """The tilings of the offloadable layers, scored by the simulator's cycle count."""
        return tune_tilings(mod, self.config, self.layout, work_dir, trials=trials)

    def offload(self, mod, tuning_db=None) -> Offload:
        """Lower every layer the accelerator can run (with the tuned tilings of ``tuning_db``,
        or the shipped ones) and register its driver as a global function."""
        tilings, where = find_tilings(self.config, tuning_db)
        if tilings:
            logger.info("accelerator tilings: %s", where)
        session = uuid.uuid4().hex[:12]  # global function names unique per compile
        layers, drivers, reasons = {}, {}, {}
        for match in find_layers(mod["main"]):
            if match.layer is None:
                continue
            plan = self.plan(match.layer)
            try:
                record = tilings.get(tiling_key(plan, self.config))
                choice = TilingChoice() if record is None else TilingChoice(
                    record["rows"], record["group_blocks"])
                lowered = lower_layer(plan, self.config, choice)
            except NotOffloadable as err:
                logger.info("%s (%s): runs on the host CPU, not the accelerator: %s",
                            match.name, match.kind, err)
                reasons[match.name] = str(err)
                continue
            bits = f"W{plan.weight_bits}A{match.layer.act_bits}"
            driver = AccelLayer(match.name, match.kind, bits, lowered)
            function = driver.register(f"tvm_qnn.accel.{session}.{len(drivers)}")
            drivers[match.name] = driver
            layers[match.name] = OffloadedLayer(plan, function, driver.out_shape,
                                                lowered.p_dtype)
            logger.info("%s (%s): accelerator %s, %d weight group(s) x %d-row tiles%s",
                        match.name, match.kind, bits, len(lowered.tiling.groups),
                        lowered.tiling.rows, "" if record is None else " (tuned tiling)")
        return Offload(OffloadAccel(layers), drivers, reasons,
                       tuned=tuning_db is not None and bool(tilings))

    def describe(self) -> str:
        cfg = self.config
        return (f"accel ({cfg.name}: {cfg.block_out}x{cfg.block_in}-bit xor-popcount GEMM "
                f"core at {cfg.clock_mhz:g} MHz, simulated; host {self.host.describe()})")

    def export_library(self, module, path: str) -> None:
        raise TvmQnnError("a model compiled for the simulated accelerator runs in this process "
                          "(its layers call the simulator); it cannot be exported as a library")
