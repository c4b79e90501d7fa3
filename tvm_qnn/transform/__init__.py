# SPDX-License-Identifier: Apache-2.0
"""Relax passes of tvm_qnn, one per module."""

from .legalize_quantize import LegalizeQuantize, quantize_half_even
from .rewrite_bitserial import KERNEL_ATTR, LayerMatch, RewriteBitserial, find_layers
from .schedule_kernels import ScheduleBitserial, is_bitserial

__all__ = [
    "KERNEL_ATTR",
    "LayerMatch",
    "LegalizeQuantize",
    "RewriteBitserial",
    "ScheduleBitserial",
    "find_layers",
    "is_bitserial",
    "quantize_half_even",
]
