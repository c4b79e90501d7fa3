# SPDX-License-Identifier: Apache-2.0
"""Exceptions raised by tvm_qnn: one hierarchy, every class derives from ``TvmQnnError``.

The simulator's errors (``SimulatorError`` and below) arrive from the C++ library as these
classes: :mod:`tvm_qnn.bitserial_accel._lib` registers their tvm-ffi error kinds. Their messages
name the instruction: ``instruction 12 (GEMM): input buffer index 5000 out of range [0, 4096)
at (...)`` or ``deadlock at instruction 3: ...``.
"""

from __future__ import annotations

import re


class TvmQnnError(Exception):
    """Base class of tvm_qnn errors."""


class UnsupportedModelError(TvmQnnError, ValueError):
    """The model is malformed or uses something tvm_qnn cannot compile; the message says what."""


class InvalidArgumentError(TvmQnnError, ValueError):
    """An argument tvm_qnn does not accept (a target spec, shapes, a precision, bit widths);
    the message names the value and what is accepted."""


class InputError(TvmQnnError, ValueError):
    """A run-time input a compiled model cannot take as given: a dtype of another kind, a value
    outside the input's integer range, NaN or infinity; the message names the input."""


class LibraryFileError(TvmQnnError):
    """An exported library (``model.so`` and its ``model.so.json``) cannot be written or
    loaded: a missing folder, a directory in the way, a torn, truncated or mismatched pair."""


class NotOffloadable(TvmQnnError):
    """A layer cannot run on the accelerator (the message says why); it stays on the CPU."""


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
