# SPDX-License-Identifier: Apache-2.0
"""The VTA-style bit-serial accelerator: configuration, ISA assembler and C++ simulator.

Architecture, ISA and cycle model: docs/accelerator.md. The simulator is a C++ library
(src/accel) built by ``pip install`` and called through tvm-ffi; :mod:`.rtl` builds the
Verilog GEMM core (src/accel/rtl) for co-simulation (docs/accelerator_rtl.md).
"""

from . import rtl
from .config import DEFAULT_CONFIG_PATH, AccelConfig
from .errors import ConfigError, CycleBudgetError, DeadlockError, ProgramError, SimulatorError
from .isa import Program, decode, encode, encode_uops, layout
from .layout import acc_bytes, pack_planes, read_output, unpack_planes
from .reference import run_reference
from .sim import Simulator

__all__ = ["DEFAULT_CONFIG_PATH", "AccelConfig", "ConfigError", "CycleBudgetError",
           "DeadlockError", "Program", "ProgramError", "SimulatorError", "Simulator",
           "acc_bytes", "decode", "encode", "encode_uops", "layout", "pack_planes",
           "read_output", "rtl", "run_reference", "unpack_planes"]
