# SPDX-License-Identifier: Apache-2.0
"""Quantizers: the {-1,+1} multi-bit encoder of Sun et al. (arXiv 2106.09886) and its kin.

An M-bit quantizer maps a real tensor to one of 2^M levels ``value = code * s``:

* ``bipolar`` (the paper's encoding, used for weights): ``code = X = sum_i 2^i b_i`` with
  ``b_i`` in {-1, +1}, i.e. the odd integers ``-(2^M - 1) .. 2^M - 1``; there is no zero level.
  Encoding: ``u = clamp(round((x / s + c) / 2), 0, c)`` with ``c = 2^M - 1``, ``X = 2u - c``;
  the planes are ``b_i = 2 bit_i(u) - 1``.
* ``unsigned`` (activations after ReLU): ``code = clamp(round(x / s), 0, 2^M - 1)``;
* ``symmetric`` (signed inputs): ``code = clamp(round(x / s), -(2^(M-1) - 1), 2^(M-1) - 1)``.

All three use the same bit-planes of ``u`` at inference, so the compiler runs every one of them
as M binary branches. Rounding is half to even (``torch.round``, as ONNX QuantizeLinear).

Backward (the approximate gradient): the rounding is passed straight through and the clamp
zeroes the gradient outside the representable range, ``d value / d x = 1[lo <= x <= hi]``; the
step ``s`` learns with the LSQ gradient (Esser et al., 2020), scaled by ``1 / sqrt(n * c)``.
With ``pow2=True`` (the default) the step is a power of two (``2^round(log2 s)``, rounded
straight through), which makes the exported integer model equal PyTorch's forward bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("bipolar", "unsigned", "symmetric")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    return (x - x * g).detach() + x * g


class Quantizer(nn.Module):
    """An M-bit uniform quantizer with a learnable step (per tensor or per output channel).

    Parameters
    ----------
    bits : int
        M, 1..8 (``symmetric`` needs at least 2).
    kind : str
        ``bipolar``, ``unsigned`` or ``symmetric`` (see the module docstring).
    channels : int, optional
        One step per channel along dimension 0 (weights); None for a per-tensor step.
    pow2 : bool
        Keep the step a power of two.
    """

    def __init__(self, bits: int, kind: str = "bipolar", channels: int | None = None,
                 pow2: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: one of {KINDS}")
        if not 1 <= bits <= 8 or (kind == "symmetric" and bits < 2):
            raise ValueError(f"bits={bits}: {kind} quantizers take 1..8 bits"
                             + (" (at least 2 for symmetric)" if kind == "symmetric" else ""))
        self.bits, self.kind, self.pow2 = bits, kind, pow2
        self.log_step = nn.Parameter(torch.zeros(channels or 1))
        self.register_buffer("initialized", torch.tensor(False))

    # -- code ranges -------------------------------------------------------------------------

    @property
    def levels(self) -> int:
        """c = 2^M - 1."""
        return (1 << self.bits) - 1

    @property
    def code_range(self) -> tuple[int, int]:
        """Smallest and largest integer code."""
        if self.kind == "bipolar":
            return -self.levels, self.levels
        if self.kind == "unsigned":
            return 0, self.levels
        half = (1 << (self.bits - 1)) - 1
        return -half, half

    def step(self) -> torch.Tensor:
        """The quantization step ``s`` (shape [channels] or [1]), a power of two if ``pow2``."""
        log2 = self.log_step / math.log(2.0)
        if self.pow2:
            log2 = _round_ste(log2)
        return torch.pow(2.0, log2)

    def _shape(self, x: torch.Tensor) -> list[int]:
        return [-1] + [1] * (x.dim() - 1) if self.log_step.numel() > 1 else [1] * x.dim()

    @torch.no_grad()
    def _init_step(self, x: torch.Tensor):
        # LSQ's initialisation: s = 2 E|x| / sqrt(Qp), per channel for weights.
        dims = list(range(1, x.dim())) if self.log_step.numel() > 1 else None
        mean = x.abs().mean(dim=dims) if dims else x.abs().mean().reshape(1)
        qp = self.code_range[1]
        step = (2 * mean / math.sqrt(qp)).clamp_min(1e-8)
        self.log_step.copy_(torch.log(step).expand_as(self.log_step))
        self.initialized.fill_(True)

    # -- forward -------------------------------------------------------------------------

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (float tensor holding integers; gradients pass through)."""
        if self.training and not bool(self.initialized):
            self._init_step(x.detach())
        s = self.step()
        if self.training:  # straight-through estimators only where gradients flow
            g = 1.0 / math.sqrt(max(1, x[0].numel() if self.log_step.numel() > 1
                                    else x.numel()) * self.code_range[1])
            s = _grad_scale(s, g)
            rnd = _round_ste
        else:
            rnd = torch.round
        s = s.reshape(self._shape(x))
        lo, hi = self.code_range
        if self.kind == "bipolar":
            u = torch.clamp(rnd((x / s + self.levels) / 2), 0, self.levels)
            return 2 * u - self.levels
        return torch.clamp(rnd(x / s), lo, hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized ``x``: ``codes(x) * s``."""
        return self.codes(x) * self.step().reshape(self._shape(x))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, kind={self.kind}, pow2={self.pow2}"


def encode_planes(codes: torch.Tensor, bits: int, kind: str = "bipolar") -> torch.Tensor:
    """The paper's M-bit encoder: planes ``b_i`` in {-1, +1}, shape ``[M, *codes.shape]``.

    ``u`` is the unsigned code (``(X + c) / 2`` for bipolar codes, ``q - lo`` otherwise) and
    ``b_i = 2 bit_i(u) - 1``, so ``X = sum_i 2^i b_i`` for bipolar codes.
    """
    c = (1 << bits) - 1
    if kind == "bipolar":
        u = ((codes + c) // 2).to(torch.int64)
    elif kind == "symmetric":
        u = (codes + (1 << (bits - 1)) - 1).to(torch.int64)
    else:
        u = codes.to(torch.int64)
    return torch.stack([2 * ((u >> i) & 1) - 1 for i in range(bits)])


def decode_planes(planes: torch.Tensor) -> torch.Tensor:
    """Recombine {-1, +1} planes with scales 2^i: ``X = sum_i 2^i b_i``."""
    weights = torch.pow(2, torch.arange(planes.shape[0])).reshape(
        [-1] + [1] * (planes.dim() - 1))
    return (planes * weights).sum(dim=0)
