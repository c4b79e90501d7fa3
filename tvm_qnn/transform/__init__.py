# SPDX-License-Identifier: Apache-2.0
"""Relax passes of tvm_qnn, one per module, and the layer matcher they share."""

from .canonicalize_fake_quant import CanonicalizeFakeQuant
from .codes_through_layout_ops import CodesThroughLayoutOps
from .concat_quantized_codes import ConcatQuantizedCodes
from .layer_matcher import LayerMatch, find_layers
from .legalize_quantize import LegalizeQuantize, quantize_half_even
from .offload_accel import OffloadAccel, OffloadedLayer
from .pad_conv_columns import PadConvColumns
from .pool_quantized_codes import PoolQuantizedCodes
from .rewrite_bitserial import RewriteBitserial
from .schedule_between_layers import ScheduleBetweenLayers
from .schedule_bitserial import ScheduleBitserial

__all__ = [
    "CanonicalizeFakeQuant",
    "CodesThroughLayoutOps",
    "ConcatQuantizedCodes",
    "LayerMatch",
    "LegalizeQuantize",
    "OffloadAccel",
    "OffloadedLayer",
    "PadConvColumns",
    "PoolQuantizedCodes",
    "RewriteBitserial",
    "ScheduleBetweenLayers",
    "ScheduleBitserial",
    "find_layers",
    "quantize_half_even",
]
