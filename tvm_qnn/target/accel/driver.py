# SPDX-License-Identifier: Apache-2.0
"""The host side of an offloaded layer: pack the input, run the program, read P back.

Like VTA's runtime, the driver owns the DRAM image: it writes the input bit-planes into a copy
of the layer's constant image (micro-ops and weights), hands image and program to the device
(the C++ simulator) and returns the branch sums P, which the compiled host epilogue turns into
the layer's output. The compiled model calls it through a TVM global function
(``R.call_dps_packed``), so the Relax VM runs it in place of the CPU kernel.
"""

from __future__ import annotations

import numpy as np
import tvm_ffi

from ...bitserial_accel import Simulator
from .lower import LoweredLayer


class AccelLayer:
    """One layer offloaded to the accelerator; call it on input codes to get P.

    Attributes
    ----------
    name : str
        The layer's name in the model.
    lowered : LoweredLayer
        Program, DRAM image and tiling.
    stats : list of dict
        The simulator's statistics of every run since the last :meth:`clear`.
    """

    def __init__(self, name: str, kind: str, bits: str, lowered: LoweredLayer,
                 simulator: Simulator | None = None):
        self.name = name
        self.kind = kind
        self.bits = bits
        self.lowered = lowered
        self.simulator = simulator or Simulator(lowered.config)
        self.stats: list[dict] = []

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of P as the host epilogue reads it (dense: ``[B, OB, block_out]``)."""
        shape = self.lowered.p_shape  # [N, OH, OW, OB, block_out]; dense: [1, B, 1, ...]
        return (shape[1],) + shape[3:] if self.kind == "dense" else shape

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """P for integer input ``codes`` (the layer's input tensor), one simulator run."""
        lw = self.lowered
        dram = lw.dram.copy()
        packed = lw.pack_input(codes)
        dram[lw.inp_offset:lw.inp_offset + packed.size] = packed
        out, stats = self.simulator.run(lw.program, dram)
        self.stats.append(stats)
        return lw.read_p(out).reshape(self.out_shape)

    def clear(self) -> None:
        """Forget the statistics of earlier runs."""
        self.stats.clear()

    def register(self, global_name: str) -> str:
        """Expose the layer as the TVM global function ``global_name(data, out)``."""

        def run(data, out):
            out.copyfrom(np.ascontiguousarray(self(data.numpy()), dtype=self.lowered.p_dtype))

        tvm_ffi.register_global_func(global_name, run, override=True)
        return global_name

    def profile(self) -> dict:
        """Cycle-model figures of the runs since :meth:`clear` (summed over runs).

        ``cycles``, ``time_us`` at the configured clock, ``utilization`` (GEMM-core busy
        fraction, 0–1), ``efficiency`` (useful bit-MACs over the core's peak: channel and
        output-block padding excluded), ``dram_bytes`` (read + written), ``gops`` (2·MACs of
        the multi-bit layer per second), plus the tiling.
        """
        lw, cfg, g = self.lowered, self.lowered.config, self.lowered.geometry
        runs = len(self.stats)
        cycles = sum(s["cycles"] for s in self.stats)
        active = sum(s["gemm"]["active_cycles"] for s in self.stats)
        dram = sum(s["dram"]["read_bytes"] + s["dram"]["write_bytes"] for s in self.stats)
        time_us = cycles / cfg.clock_mhz
        useful = runs * g.macs * g.a_bits * g.w_bits
        return {
            "name": self.name, "kind": self.kind, "bits": self.bits, "device": "accel",
            "runs": runs, "cycles": cycles, "time_us": time_us,
            "utilization": active / cycles if cycles else 0.0,
            "efficiency": useful / (cycles * cfg.peak_bit_macs_per_cycle) if cycles else 0.0,
            "dram_bytes": dram, "macs": runs * g.macs,
            "gops": 2 * runs * g.macs / (time_us * 1e3) if cycles else 0.0,
            "tiles": {"rows": lw.tiling.rows, "weight_groups": list(lw.tiling.groups),
                      "channel_blocks": lw.tiling.cb, "p_bytes": lw.tiling.out_bytes},
        }
