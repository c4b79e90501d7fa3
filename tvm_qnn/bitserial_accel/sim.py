# SPDX-License-Identifier: Apache-2.0
"""Python face of the C++ simulator: ``Simulator(config).run(program, dram) -> (dram, stats)``."""

from __future__ import annotations

import json

import numpy as np

from ._lib import library
from .config import AccelConfig


class Simulator:
    """Functional + cycle-level simulator of one accelerator configuration.

    A "device" in the tinygrad sense: the compiler hands it a program and a DRAM image and gets
    the DRAM image back with the cycle statistics (docs/accelerator.md, "Cycle model").
    """

    def __init__(self, config: AccelConfig | None = None) -> None:
        self.config = config or AccelConfig.load()
        self._config_json = self.config.to_json()

    def run(self, program, dram, *, trace: bool = False, max_cycles: int = 10**9,
            gemm: str = "functional") -> tuple[np.ndarray, dict]:
        """Run ``program`` (a :class:`~.isa.Program` or its bytes) on ``dram``.

        Parameters
        ----------
        program
            Instructions, 16 bytes each.
        dram
            The DRAM image (uint8 array or bytes); not modified.
        trace
            Add ``stats["trace"]``: per instruction its module, start/end cycle and stalls.
        max_cycles
            Refuse (:class:`CycleBudgetError`) any instruction that would end past this cycle.
        gemm
            ``"functional"`` (C++) or ``"rtl"``: every GEMM instruction runs plane pair by plane
            pair through the verilated Verilog core (co-simulation, docs/accelerator_rtl.md),
            whose clock cycles become the instruction's cycles. Builds the core on first use
            (cached); needs verilator, else :class:`~tvm_qnn.bitserial_accel.rtl.RtlUnavailable`.

        Returns
        -------
        (dram, stats)
            The DRAM after the run (a new uint8 array) and the statistics dict: ``cycles``,
            ``time_us``, per module ``insns/busy/stall_token/stall_dram/idle``, ``gemm``
            (``active_cycles``, ``bit_macs``, ``utilization``), ``dram`` traffic and ``queues``.

        Raises
        ------
        ProgramError, DeadlockError, CycleBudgetError, ConfigError
            With a message naming the instruction index and what was wrong.
        """
        data = bytes(np.ascontiguousarray(dram, dtype=np.uint8).reshape(-1)) \
            if not isinstance(dram, bytes | bytearray) else bytes(dram)
        if gemm == "functional":
            gemm_lib = ""
        elif gemm == "rtl":
            from .rtl import build_gemm_core

            gemm_lib = build_gemm_core(self.config)
        else:
            raise ValueError(f"gemm={gemm!r}: use 'functional' or 'rtl'")
        out, stats = library().run(self._config_json, bytes(program), data, bool(trace),
                                   int(max_cycles), gemm_lib)
        return np.frombuffer(bytes(out), dtype=np.uint8).copy(), json.loads(str(stats))
