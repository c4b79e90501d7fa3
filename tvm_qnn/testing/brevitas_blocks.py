# SPDX-License-Identifier: Apache-2.0
"""Small ``brevitas.nn`` networks of our own, in the zoo form :mod:`.brevitas_models` exports
and caches (``factory(pretrained=False)``): the blocks Brevitas' examples lack.

Fixed-point (power-of-two) quantizers keep the float references exact. Channels and maps are
a few, so an export takes a second and a compile a few.
"""

from __future__ import annotations

from .brevitas_models import BrevitasModel


def _layers():
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantReLU
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Uint8ActPerTensorFixedPoint,
    )

    def inp():
        return QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=4)

    def relu(bits):
        return QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits)

    def conv(cin, cout, k=3, stride=1):
        return QuantConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False,
                           weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=2)

    return inp, relu, conv


def concat_blocks_2w2a(pretrained: bool = False):
    """``torch.cat`` of activations that share one quantizer, as DenseNet and Inception use
    it: two branches concatenated, a dense concat of that with a conv of it, a max pool of the
    concat beside a strided conv of it (Inception's reduction), and a conv after each."""
    import torch

    inp, relu, conv = _layers()

    class ConcatBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.q = inp(), relu(2)  # one q: one scale for every concatenated part
            self.a, self.b = conv(4, 4), conv(4, 4, k=1)
            self.c = conv(8, 4)
            self.d = conv(12, 4, stride=2)
            self.pool = torch.nn.MaxPool2d(2)
            self.e = conv(16, 4)

        def forward(self, x):
            x = self.inp(x)
            c1 = torch.cat([self.q(self.a(x)), self.q(self.b(x))], dim=1)
            c2 = torch.cat([c1, self.q(self.c(c1))], dim=1)
            return self.e(torch.cat([self.q(self.d(c2)), self.pool(c2)], dim=1))

    return ConcatBlocks()


def concat_two_scales_2w2a(pretrained: bool = False):
    """A ``torch.cat`` of two activations quantized apart, to 2 and 3 bits of the same tensor:
    their power-of-two scales differ (the ranges are 3 and 7 steps), so the conv after the
    concat cannot read one tensor of codes."""
    import torch

    inp, relu, conv = _layers()

    class TwoScales(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.q2, self.q3 = inp(), relu(2), relu(3)
            self.a, self.b = conv(4, 4), conv(8, 4)

        def forward(self, x):
            y = self.a(self.inp(x))
            return self.b(torch.cat([self.q2(y), self.q3(y)], dim=1))

    return TwoScales()


CONCAT = (
    BrevitasModel("concat_blocks_2w2a", (1, 4, 8, 8), 2, 2, zoo=__name__),
    BrevitasModel("concat_two_scales_2w2a", (1, 4, 8, 8), 2, 2, zoo=__name__),
)
