# SPDX-License-Identifier: Apache-2.0
"""How one layer is cut to the accelerator's buffers: its geometry, the tiling, the choices.

A dense layer is a 1×1 convolution over a 1×B image (B×1: the batch rows tile like output
rows), so one tiling serves both. Output blocks go in groups that fit half the weight buffer
(the two halves alternate, so the next group's weights load while this group computes; group
sizes ramp 1, 2, 4, … so the first load, which nothing hides, is small), output rows in tiles
that fit half the input and accumulator buffers (double-buffered: LOAD of tile t+1 and STORE of
tile t-1 overlap the GEMM of tile t). :func:`choose_tiling` picks the row count by a pipeline
model of the cycles; :func:`tiling_space` lists what a tuner may try instead
(:mod:`.tilings`). The program itself is emitted by :mod:`.lower`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...bitserial_accel import AccelConfig
from ...errors import NotOffloadable
from ...topi.bitpack import words_for
from ...topi.layer import LayerPlan


@dataclass(frozen=True)
class Geometry:
    """A layer as the accelerator sees it: a batch of NCHW images convolved by OIHW weights."""

    n: int
    c: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    strides: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    oh: int
    ow: int
    a_bits: int
    w_bits: int
    # Set when the host gathers each output's window into one row (im2col): the original
    # conv's (channels, kernel, strides, dilation, pads); the geometry is then a 1x1 conv.
    im2col: tuple | None = None

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the layer (multi-bit)."""
        return self.n * self.oc * self.oh * self.ow * self.c * self.kh * self.kw

    @property
    def max_p(self) -> int:
        """The largest branch sum P an output can reach."""
        return ((1 << self.a_bits) - 1) * ((1 << self.w_bits) - 1) * self.c * self.kh * self.kw


def geometry(plan: LayerPlan, block_in: int) -> Geometry:
    """The accelerator's view of ``plan``; raises :class:`NotOffloadable` for what it lacks."""
    layer = plan.layer
    if layer.kind == "dense":
        b, k = layer.input_shape  # a B×1 image: batch rows tile like output rows
        return Geometry(1, k, b, 1, layer.out_channels, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0),
                        b, 1, layer.act_bits, plan.weight_bits)
    if layer.groups != 1:
        raise NotOffloadable(f"grouped convolution (groups={layer.groups}): the GEMM core "
                             "reduces over all input channels of a block")
    n, c, h, w = layer.input_shape
    _, _, oh, ow = layer.output_shape
    kh, kw = (int(s) for s in layer.weight.shape[2:])
    if kh * kw * words_for(c, block_in) >= 2 * words_for(c * kh * kw, block_in):
        # Few channels (a first layer): one row of C·KH·KW lanes per output wastes at most
        # half as many GEMM cycles on empty lanes as KH·KW rows of C lanes.
        return Geometry(n, c * kh * kw, oh, ow, layer.out_channels, 1, 1, (1, 1), (1, 1),
                        (0, 0, 0, 0), oh, ow, layer.act_bits, plan.weight_bits,
                        im2col=(c, kh, kw, tuple(layer.strides), tuple(layer.dilation),
                                tuple(layer.pads)))
    return Geometry(n, c, h, w, layer.out_channels, kh, kw, tuple(layer.strides),
                    tuple(layer.dilation), tuple(layer.pads), oh, ow, layer.act_bits,
                    plan.weight_bits)


@dataclass(frozen=True)
class Tiling:
    """How a layer is cut to the buffers (see the module docstring)."""

    hw_pad: bool  # the LOADs pad (else the driver writes a padded image to DRAM)
    cb: int  # channel blocks
    ob: int  # output-channel blocks
    groups: tuple[int, ...]  # output blocks per weight group
    obg_max: int
    rows: int  # output rows per tile
    rows_in: int  # input rows a full tile reads
    wp: int  # padded input width in SRAM
    hd: int  # input image height in DRAM
    wd: int  # input image width in DRAM
    out_bytes: int

    @property
    def double_weights(self) -> bool:
        """Several weight groups, taking turns in the two halves of the weight buffer."""
        return len(self.groups) > 1


@dataclass(frozen=True)
class TilingChoice:
    """The two parameters of a tiling a tuner may set: output rows per tile and output blocks per
    weight group (each capped to what fits; None: the pipeline model's choice)."""

    rows: int | None = None
    group_blocks: int | None = None


def choose_tiling(g: Geometry, cfg: AccelConfig,
                  choice: TilingChoice = TilingChoice()) -> Tiling:
    """Pick the tiling of ``g`` for ``cfg``; raises :class:`NotOffloadable` if nothing fits.

    ``choice`` overrides the rows per tile and the weight group size (each clamped to what
    the buffers hold), for :mod:`tvm_qnn.tuning.accel`.
    """
    if cfg.batch != 1:
        raise NotOffloadable(f"the lowering drives batch-1 GEMM cores (config batch={cfg.batch})")
    if not (1 <= g.a_bits <= 8 and 1 <= g.w_bits <= 8):
        raise NotOffloadable(f"W{g.w_bits}A{g.a_bits}: the GEMM core takes 1..8 bit-planes")
    cb = -(-g.c // cfg.block_in)
    ob = -(-g.oc // cfg.block_out)
    top, left, bottom, right = g.pads
    # LOAD pads fill every lane of a block: exact only when no lane is channel padding.
    hw_pad = g.c % cfg.block_in == 0 and max(g.pads) <= 15
    wp = g.w + left + right
    hd, wd = (g.h, g.w) if hw_pad else (g.h + top + bottom, wp)
    taps = g.kh * g.kw * cb
    per_ob = taps * g.w_bits  # weight entries of one output block

    def rows_in(rows):
        return (rows - 1) * g.strides[0] + (g.kh - 1) * g.dilation[0] + 1

    inp_half, acc_half = cfg.inp_entries // 2, cfg.acc_entries // 2
    if rows_in(1) * wp * cb * g.a_bits > inp_half:
        raise NotOffloadable(f"one output row reads {rows_in(1) * wp * cb * g.a_bits} input "
                             f"entries; half the input buffer holds {inp_half}")

    def group_cap(weight_space: int, variants: int) -> int:
        # Output blocks per group: their weights, micro-ops and one output row must fit.
        return min(ob, weight_space // per_ob, (cfg.uop_entries - 2) // (variants * taps),
                   acc_half // g.ow)

    # One group holds every output block if all of it fits; otherwise the groups take
    # turns in the two halves of the weight buffer (a group never overwrites the weights
    # the group before it is still computing with).
    obg_max = group_cap(cfg.wgt_entries, 2)
    if obg_max < ob or (choice.group_blocks is not None and choice.group_blocks < ob):
        obg_max = group_cap(cfg.wgt_entries // 2, 4)
    if obg_max >= 1 and choice.group_blocks is not None:
        obg_max = max(1, min(obg_max, choice.group_blocks))
    if obg_max < 1:
        raise NotOffloadable(f"one block of {cfg.block_out} output channels needs {per_ob} "
                             f"weight entries, {4 * taps} micro-ops and {g.ow} accumulator "
                             f"entries per row; the buffers hold {cfg.wgt_entries // 2} (half), "
                             f"{cfg.uop_entries - 2} and {acc_half} (half)")
    max_rows = 1
    while (max_rows < g.oh and rows_in(max_rows + 1) * wp * cb * g.a_bits <= inp_half
           and (max_rows + 1) * g.ow * obg_max <= acc_half):
        max_rows += 1
    out_bytes = 1 if g.max_p <= 127 else 2 if g.max_p <= 32767 else 4

    def estimate(rows):
        # Cycles of the double-buffered pipeline: the first load and the last store are
        # exposed, every tile in between costs the slower of compute and DRAM traffic.
        entries = rows * g.ow * obg_max
        compute = 2 * cfg.gemm_pipeline_cycles + entries * (1 + taps * g.a_bits * g.w_bits)
        load = cfg.dram_latency_cycles + (cb * rows_in(rows) * wd * g.a_bits
                                          * cfg.inp_entry_bytes) / cfg.dram_bytes_per_cycle
        store = cfg.dram_latency_cycles + entries * cfg.block_out * out_bytes \
            / cfg.dram_bytes_per_cycle
        tiles = -(-g.oh // rows) * -(-ob // obg_max) * g.n
        return load + tiles * max(compute, load + store) + store

    rows = min(range(1, max_rows + 1), key=estimate)
    if choice.rows is not None:
        rows = max(1, min(max_rows, choice.rows))
    # Several groups: sizes ramp 1, 2, 4, ... so the unhidden first weight load is small.
    groups, size, left_ob = [], 1 if obg_max < ob else ob, ob
    while left_ob:
        take = min(size, obg_max, left_ob)
        groups.append(take)
        left_ob -= take
        size *= 2
    return Tiling(hw_pad, cb, ob, tuple(groups), obg_max, rows, rows_in(rows), wp, hd, wd,
                  out_bytes)


def tiling_space(plan: LayerPlan, cfg: AccelConfig) -> list[TilingChoice]:
    """The tilings a tuner may try for ``plan``: every row count that fits, with the largest
    weight group that fits and with halved ones (at most 64 candidates)."""
    g = geometry(plan, cfg.block_in)
    widest = choose_tiling(g, cfg, TilingChoice(rows=1))
    groups, size = [], widest.obg_max
    while size >= 1 and len(groups) < 4:
        groups.append(size)
        size //= 2
    out = []
    for group in groups:
        tallest = choose_tiling(g, cfg, TilingChoice(rows=g.oh, group_blocks=group)).rows
        rows = sorted({*range(1, min(tallest, 8) + 1), *range(tallest, 0, -max(1, tallest // 8))})
        out += [TilingChoice(r, group) for r in rows]
    return out[:64]
