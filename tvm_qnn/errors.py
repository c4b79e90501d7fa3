# SPDX-License-Identifier: Apache-2.0
"""Exceptions raised by tvm_qnn (all derive from ``TvmQnnError``)."""


class TvmQnnError(Exception):
    """Base class of tvm_qnn errors."""


class UnsupportedModelError(TvmQnnError, ValueError):
    """The model is malformed or uses something tvm_qnn cannot compile; the message says what."""
