# SPDX-License-Identifier: Apache-2.0
"""Errors of the accelerator simulator.

The C++ simulator throws tvm-ffi errors whose kinds (``AccelProgramError`` ...) are registered
here, so they arrive in Python as these classes. Messages name the instruction:
``instruction 12 (GEMM): input buffer index 5000 out of range [0, 4096) at (...)`` or
``deadlock at instruction 3: ...``.
"""

from __future__ import annotations

import re

import tvm_ffi

from ..errors import TvmQnnError


class SimulatorError(TvmQnnError, RuntimeError):
    """Base class: the simulator refused a program or a configuration."""

    @property
    def instruction(self) -> int | None:
        """Index of the offending instruction in the program, if the error names one."""
        m = re.search(r"instruction (\d+)", str(self))
        return int(m.group(1)) if m else None


class ProgramError(SimulatorError, ValueError):
    """A bad instruction: unknown field value, SRAM index or DRAM address out of range."""


class DeadlockError(SimulatorError):
    """No module can progress but instructions remain (a token is never pushed, or a full queue)."""


class CycleBudgetError(SimulatorError):
    """The program would run past ``max_cycles`` (a runaway loop, or a too small budget)."""


class ConfigError(SimulatorError, ValueError):
    """The accelerator configuration is invalid."""


tvm_ffi.register_error("AccelProgramError", ProgramError)
tvm_ffi.register_error("AccelDeadlockError", DeadlockError)
tvm_ffi.register_error("AccelBudgetError", CycleBudgetError)
tvm_ffi.register_error("AccelConfigError", ConfigError)
