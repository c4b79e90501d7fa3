# SPDX-License-Identifier: Apache-2.0
"""The VTA-style bit-serial accelerator as a device: configuration, ISA, C++ simulator, RTL.

The hardware side only; compiling layers for it is the ``accel`` target
(:mod:`tvm_qnn.target.accel`).

Architecture, ISA and cycle model: docs/accelerator.md. The simulator is a C++ library
(src/accel) built by ``pip install`` and called through tvm-ffi; :mod:`.rtl` builds the
Verilog GEMM core (src/accel/rtl) for co-simulation (docs/accelerator_rtl.md).
"""

from . import rtl
from .config import DEFAULT_CONFIG_PATH, AccelConfig
from .dram import acc_bytes, pack_planes, read_output, unpack_planes
from .isa import Program, decode, encode, encode_uops, isa_description
from .isa_reference import run_reference
from .sim import Simulator

__all__ = ["DEFAULT_CONFIG_PATH", "AccelConfig", "Program", "Simulator", "acc_bytes", "decode",
           "encode", "encode_uops", "isa_description", "pack_planes", "read_output", "rtl",
           "run_reference", "unpack_planes"]
