# SPDX-License-Identifier: Apache-2.0
"""Quantization-aware training with the {-1,+1} encoding (PyTorch).

``Quantizer`` (the M-bit encoder and its approximate gradient), ``QConv2d`` / ``QLinear``,
``quantize_model`` (float → quantized, first/last layer policy), ``init_from_higher_bit``
(W4A4 → W2A2 → W1A1), ``export_onnx`` (QCDQ that ``tvm_qnn.compile`` runs bit-exactly) and
``freeze`` (the constant inference form, for ``torch.export``).
"""

from .convert import init_from_higher_bit, quantize_model
from .export import InputScale, export_onnx
from .freeze import freeze
from .layers import QConv2d, QLinear
from .quantizers import Quantizer, decode_planes, encode_planes

__all__ = ["InputScale", "QConv2d", "QLinear", "Quantizer", "decode_planes", "encode_planes",
           "export_onnx", "freeze", "init_from_higher_bit", "quantize_model"]
