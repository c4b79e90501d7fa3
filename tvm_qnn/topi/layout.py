# SPDX-License-Identifier: Apache-2.0
"""How a target lays out its bit-serial kernels: one frozen value, owned by the target."""

from __future__ import annotations

from dataclasses import dataclass, replace

#: The kernel families a target's cost model (and tuning) chooses between for a conv.
KERNEL_FAMILIES = ("bit-serial", "int8-dot", "lut")
#: Weight bits up to which forcing the ``"lut"`` family puts a conv on the table-lookup
#: kernel (tuning and the benchmarks measure every family where it fits). Not the cost
#: model's rule: a target says where it picks lookups untuned (x86:
#: ``target.x86.lut.LUT_MAX_WEIGHT_BITS``).
FORCED_LUT_WEIGHT_BITS = 8


@dataclass(frozen=True)
class Layout:
    """The layout decisions :func:`~tvm_qnn.topi.layer.plan_layer` takes from a target.

    Attributes
    ----------
    oc_block : int
        Output channels per packed weight vector (the weight layout's inner dimension): 16 for
        AVX-512 VPOPCNTDQ, 8 for AVX2, 64 for NEON. Reduced to a divisor of the channels per
        group when needed.
    word_bits : int
        Bits per packed word of the bit-planes: 64 (popcount on 64-bit lanes) or 8 (byte
        lanes, NEON ``cnt``).
    integer_min_branches : int or None
        Convs with at least this many branches (M·K) get a plain integer kernel instead;
        None keeps every layer bit-serial.
    single_branch_oc_block : int or None
        ``oc_block`` of single-branch (W1A1) layers, when it differs from ``oc_block``.
    dot8_min_branches : int or None
        Convs with at least this many branches use the u8 × s8 dot-product kernel
        (:mod:`.dot8_conv`) when they fit it: the target's cost model says from how many
        branches byte multiply-adds beat popcounts. None: never.
    dot8_oc_block : int
        Output channels per dot-product step (int32 lanes of the target's vector).
    dot8_narrow_oc_block : int or None
        Output channels of a narrower step, for layers whose channels ``dot8_oc_block`` does
        not divide (8 on AVX-512: ymm steps); None: the target has none.
    lut_max_weight_bits : int or None
        Convs whose weights have at most this many bits (and at most ``lut_max_branches``
        branches) use the table-lookup kernel (:mod:`.lut_conv`) when they fit it, before the
        dot kernel is considered: its cost grows with the weight planes, and with the
        activation bits only through how often its byte sums widen. 0: the target has the
        kernel, only tuning chooses it; None: the target has no such kernel.
    lut_max_branches : int or None
        See ``lut_max_weight_bits``; None: no limit.
    """

    oc_block: int = 16
    word_bits: int = 64
    integer_min_branches: int | None = None
    single_branch_oc_block: int | None = None
    dot8_min_branches: int | None = None
    dot8_oc_block: int = 8
    dot8_narrow_oc_block: int | None = None
    lut_max_weight_bits: int | None = None
    lut_max_branches: int | None = None

    def oc_block_for(self, branches: int) -> int:
        """The preferred output channels per weight vector of a layer with ``branches``."""
        if self.single_branch_oc_block and branches == 1:
            return self.single_branch_oc_block
        return self.oc_block

    def uses_dot8_kernel(self, branches: int) -> bool:
        """True when a conv with ``branches`` (M·K) gets the u8 × s8 dot kernel, if it fits."""
        return bool(self.dot8_min_branches) and branches >= self.dot8_min_branches

    def dot8_step_fits(self, block: int) -> bool:
        """True when a dot-product step of ``block`` output channels exists on the target."""
        return block in (self.dot8_oc_block, self.dot8_narrow_oc_block)

    def uses_lut_kernel(self, weight_bits: int, act_bits: int) -> bool:
        """True when a conv with ``weight_bits``-bit weights and ``act_bits``-bit codes gets
        the table-lookup kernel, if it fits."""
        return (bool(self.lut_max_weight_bits) and weight_bits <= self.lut_max_weight_bits
                and (self.lut_max_branches is None
                     or weight_bits * act_bits <= self.lut_max_branches))

    def with_lut(self, max_weight_bits: int | None) -> Layout:
        """This layout with the table-lookup kernel for every conv that fits it with weights of
        at most ``max_weight_bits`` bits, whatever its branches (None or 0: for none); itself
        where the target has no such kernel."""
        if self.lut_max_weight_bits is None:
            return self
        return replace(self, lut_max_weight_bits=max_weight_bits or 0, lut_max_branches=None)

    def with_family(self, family: str) -> Layout:
        """This layout with every conv that fits the ``family``'s kernel on it: ``"int8-dot"``
        from one branch on, ``"lut"`` at any weight width (where the target has that kernel at
        all), ``"bit-serial"`` on neither (the integer kernel's rule stays). How tuning
        measures a layer in each family."""
        if family == "int8-dot":
            return replace(self.with_lut(None), dot8_min_branches=1)
        if family == "lut":
            if self.lut_max_weight_bits is None:
                return self
            return replace(self.with_lut(FORCED_LUT_WEIGHT_BITS), dot8_min_branches=None)
        if family == "bit-serial":
            return replace(self.with_lut(None), dot8_min_branches=None)
        raise ValueError(f"kernel family {family!r}: one of {', '.join(KERNEL_FAMILIES)}")

    def uses_integer_kernel(self, branches: int, group_channels: int | None = None) -> bool:
        """True when a conv with ``branches`` (M·K) gets the plain integer kernel.

        With ``group_channels`` (input channels per group), the branches are weighed by how
        full the words are: a word of 64 lanes holding 1 channel (a depthwise conv, a
        one-channel first layer) costs 64 times the popcounts per real MAC, where the integer
        kernel pays per channel.

        The waste is counted in 64-bit lanes even for byte words: a byte word holding one
        channel still pays the bit-serial loop per channel. Measured on x86:haswell code (byte
        words), depthwise 3x3 convs alone, integer against bit-serial: W1A1 0.48 / 2.03 ms
        (64 ch, 56²), 0.086 / 0.56 ms (256 ch, 14²); W2A2 0.35 / 4.9 ms (64 ch, 56²).
        """
        if not self.integer_min_branches:
            return False
        if group_channels:
            lanes = max(self.word_bits, 64)
            words = -(-group_channels // lanes)
            branches = branches * words * lanes / group_channels
        return branches >= self.integer_min_branches


@dataclass(frozen=True)
class KernelChoice:
    """A layer's kernel family as tuning measured it (:mod:`tvm_qnn.tuning.families`).

    Attributes
    ----------
    family : str
        One of :data:`KERNEL_FAMILIES`.
    signature : str
        :attr:`~tvm_qnn.topi.layer.QuantizedLayer.signature` of the layer it was measured for:
        the choice serves the layers of that signature (others keep the cost model's).
    why : str
        What was measured, for the per-layer report (e.g. ``"tuned: int8-dot 0.52 ms,
        bit-serial 0.61 ms"``).
    times_ms : tuple of (str, float)
        The same measurements as data: each family's kernel time in ms, fastest first
        (empty in files written before it was kept).
    """

    family: str
    signature: str
    why: str
    times_ms: tuple = ()
