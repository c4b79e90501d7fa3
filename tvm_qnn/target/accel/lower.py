# SPDX-License-Identifier: Apache-2.0
"""Lowering one bit-serial conv2d / dense layer to an accelerator program.

The accelerator computes the branch sum ``P = sum_{i,j} 2^(i+j) popcount(A_i xor B_j)`` of
every output (DESIGN.md §1, docs/accelerator.md); the host turns P into the layer's output
with the same epilogue as the CPU kernels. A dense layer is a 1×1 convolution over a 1×B
image (B×1: the batch rows tile like output rows), so one lowering serves both.

DRAM layouts (entries are the buffers' entries, docs/accelerator.md §1):

* input ``[N][CB][Hd][Wd][M]``: channel blocks of ``block_in`` lanes outermost, so a padded
  position is one LOAD element;
* weights ``[OB][KH][KW][CB][K]``: output blocks of ``block_out`` channels outermost, so one
  group of output blocks is one contiguous LOAD;
* output ``[N][OH][OW][OB]`` elements of ``block_out`` P values (int8/16/32, the narrowest
  that holds the largest P).

The tiling (:mod:`.tiling`) cuts the layer to the buffers; this module emits the program of
that tiling. Dependency tokens follow VTA's pattern (docs/accelerator.md, "Dependency tokens").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...bitserial_accel import AccelConfig, Program, encode_uops, pack_planes
from ...errors import NotOffloadable
from ...topi.layer import LayerPlan
from ...topi.weights import decompose_weights
from .tiling import Geometry, Tiling, TilingChoice, choose_tiling, geometry


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


@dataclass
class LoweredLayer:
    """A layer's accelerator program and the constant part of its DRAM image.

    The driver writes the packed input at ``inp_offset`` (bytes) into a copy of ``dram``, runs
    ``program`` and reads P from ``out_offset``.
    """

    geometry: Geometry
    tiling: Tiling
    config: AccelConfig
    program: Program
    dram: np.ndarray  # micro-ops and weights filled in, input and output zero
    inp_offset: int
    out_offset: int
    pad_code: int
    act_lo: int
    act_shift: int = 0  # codes act_lo + 2^act_shift u (QONNX bipolar: 1)

    @property
    def p_shape(self) -> tuple[int, ...]:
        """Shape of the P tensor the accelerator writes: ``[N, OH, OW, OB, block_out]``."""
        g = self.geometry
        return (g.n, g.oh, g.ow, self.tiling.ob, self.config.block_out)

    @property
    def p_dtype(self) -> str:
        """int8, int16 or int32: the narrowest type that holds the layer's largest P."""
        return f"int{8 * self.tiling.out_bytes}"

    def pack_input(self, codes: np.ndarray) -> np.ndarray:
        """Integer codes ``[N, C, H, W]`` (dense: ``[B, K]``) → the input region's bytes."""
        g, t, cfg = self.geometry, self.tiling, self.config
        u = (np.asarray(codes).astype(np.int64) - self.act_lo) >> self.act_shift
        if u.ndim == 2:  # dense [B, K]: a B×1 image of K channels
            u = u.T
        if g.im2col is not None:
            u = _gather_windows(u, g, self.pad_code)
        u = u.reshape(g.n, g.c, g.h, g.w)
        if not t.hw_pad:
            top, left, bottom, right = g.pads
            u = np.pad(u, ((0, 0), (0, 0), (top, bottom), (left, right)),
                       constant_values=self.pad_code)
        u = np.pad(u, ((0, 0), (0, t.cb * cfg.block_in - g.c), (0, 0), (0, 0)))
        u = u.reshape(g.n, t.cb, cfg.block_in, t.hd, t.wd).transpose(0, 1, 3, 4, 2)
        return pack_planes(u[..., None, :], g.a_bits).reshape(-1)

    def read_p(self, dram: np.ndarray) -> np.ndarray:
        """The P tensor ``[N, OH, OW, OB, block_out]`` from the DRAM after a run."""
        count = int(np.prod(self.p_shape))
        raw = dram[self.out_offset:self.out_offset + count * self.tiling.out_bytes]
        return np.frombuffer(raw.tobytes(), dtype=f"<i{self.tiling.out_bytes}").reshape(
            self.p_shape)


def _gather_windows(u: np.ndarray, g: Geometry, pad_code: int) -> np.ndarray:
    """``u[N, C, H, W]`` → ``[N, C·KH·KW, OH, OW]``: each output's window, (c, ky, kx) order
    (the order of the flattened OIHW weights), padded positions holding ``pad_code``."""
    _, kh, kw, (sh, sw), (dh, dw), (top, left, bottom, right) = g.im2col
    up = np.pad(u, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_code)
    taps = [up[:, :, ky * dh:ky * dh + (g.oh - 1) * sh + 1:sh,
               kx * dw:kx * dw + (g.ow - 1) * sw + 1:sw]
            for ky in range(kh) for kx in range(kw)]
    return np.stack(taps, axis=2).reshape(u.shape[0], -1, g.oh, g.ow)


def _weight_image(plan: LayerPlan, g: Geometry, t: Tiling, cfg: AccelConfig) -> np.ndarray:
    v = decompose_weights(plan.layer.weight).codes  # [OC, C, KH, KW] or [OC, K]
    v = v.reshape(g.oc, g.c, g.kh, g.kw)
    v = np.pad(v, ((0, t.ob * cfg.block_out - g.oc), (0, t.cb * cfg.block_in - g.c), (0, 0),
                   (0, 0)))
    v = v.reshape(t.ob, cfg.block_out, t.cb, cfg.block_in, g.kh, g.kw)
    v = v.transpose(0, 4, 5, 2, 1, 3)  # [OB, KH, KW, CB, block_out, block_in]
    return pack_planes(v, g.w_bits).reshape(-1)


def _weight_loads(tiles, t: Tiling, taps: int, k: int, wgt_dram: int, wgt_half: int):
    """Where each weight group's LOADs go in the load module's stream.

    Group 0 loads before the first tile. Group g+1 goes into the half group g-1 used, which
    is free once tile ``first(g) + 1`` has its token (compute finished ``first(g) - 1``, the
    last tile of g-1); its output blocks are spread over the later tiles of group g so no
    single big LOAD holds the next tiles' inputs back. A group of one tile hands the whole
    load to the next group's first tile.
    """
    first, members = {}, {}
    for ti, (gi, ob0, obg, *_rest) in enumerate(tiles):
        first.setdefault(gi, (ti, ob0, obg))
        members.setdefault(gi, []).append(ti)

    def load(gi, ob_lo, ob_hi):
        half = gi % 2 if t.double_weights else 0
        return dict(mem="WGT", sram_base=half * wgt_half + (ob_lo - first[gi][1]) * taps * k,
                    dram_base=wgt_dram + ob_lo * taps * k, x_size=(ob_hi - ob_lo) * taps,
                    planes=k)

    before, after = {0: [load(0, first[0][1], first[0][1] + first[0][2])]}, {}
    for gi in range(1, len(first)):
        ti0, ob0, obg = first[gi]
        hosts = members[gi - 1][1:]
        if not hosts:
            before.setdefault(ti0, []).append(load(gi, ob0, ob0 + obg))
            continue
        for h, host in enumerate(hosts):
            lo, hi = ob0 + obg * h // len(hosts), ob0 + obg * (h + 1) // len(hosts)
            if hi > lo:
                after.setdefault(host, []).append(load(gi, lo, hi))
    return before, after


def lower_layer(plan: LayerPlan, cfg: AccelConfig,
                choice: TilingChoice = TilingChoice()) -> LoweredLayer:
    """Build the program and constant DRAM image of ``plan`` for accelerator ``cfg``.

    ``choice``: rows per tile and weight group size from a tuning record (default: the
    pipeline model's choice).

    Raises
    ------
    NotOffloadable
        With the reason, when the layer does not fit this accelerator.
    """
    g = geometry(plan, cfg.block_in)
    t = choose_tiling(g, cfg, choice)
    sh, sw = g.strides
    dh, dw = g.dilation
    top, left, bottom, right = g.pads
    m, k = g.a_bits, g.w_bits
    taps = g.kh * g.kw * t.cb
    inp_half, acc_half = cfg.inp_entries // 2, cfg.acc_entries // 2
    wgt_half = cfg.wgt_entries // 2 if t.double_weights else 0
    cb_stride = t.rows_in * t.wp * m  # SRAM entries of one channel block of a tile

    # Micro-ops: two resets, then per (input/acc slot, weight half) the GEMM of a tile with
    # obg_max output blocks; a smaller group uses a prefix (ob is the outermost uop index).
    uops = [(0, 0, 0), (acc_half, 0, 0)]
    variant_base = {}
    for slot in range(2):
        for half in range(2 if t.double_weights else 1):
            variant_base[slot, half] = len(uops)
            for ob in range(t.obg_max):
                for ky in range(g.kh):
                    for kx in range(g.kw):
                        for c in range(t.cb):
                            uops.append((
                                slot * acc_half + ob,
                                slot * inp_half + ((c * t.rows_in + ky * dh) * t.wp + kx * dw) * m,
                                half * wgt_half + (((ob * g.kh + ky) * g.kw + kx) * t.cb + c) * k,
                            ))

    # DRAM image (bytes): micro-ops, weights, input, output; each region entry-aligned.
    out_elem = cfg.batch * cfg.block_out * t.out_bytes
    align = math.lcm(8, cfg.inp_entry_bytes, cfg.wgt_entry_bytes, out_elem)
    uop_bytes = encode_uops(uops)
    wgt_bytes = _weight_image(plan, g, t, cfg)
    wgt_off = _align(uop_bytes.size, align)
    inp_off = _align(wgt_off + wgt_bytes.size, align)
    inp_size = g.n * t.cb * t.hd * t.wd * m * cfg.inp_entry_bytes
    out_off = _align(inp_off + inp_size, align)
    out_size = g.n * g.oh * g.ow * t.ob * out_elem
    dram = np.zeros(out_off + out_size, np.uint8)
    dram[:uop_bytes.size] = uop_bytes
    dram[wgt_off:wgt_off + wgt_bytes.size] = wgt_bytes
    wgt_dram, inp_dram = wgt_off // cfg.wgt_entry_bytes, inp_off // cfg.inp_entry_bytes
    out_dram = out_off // out_elem

    tiles = []
    ob0 = 0
    for gi, size in enumerate(t.groups):
        for n in range(g.n):
            for r0 in range(0, g.oh, t.rows):
                tiles.append((gi, ob0, size, n, r0, min(t.rows, g.oh - r0)))
        ob0 += size
    total = len(tiles)

    weights_before, weights_after = _weight_loads(tiles, t, taps, k, wgt_dram, wgt_half)
    p = Program()
    try:
        p.load("UOP", sram_base=0, dram_base=0, x_size=len(uops))
        for ti, (gi, ob0, obg, n, r0, rows) in enumerate(tiles):
            slot, half = ti % 2, (gi % 2 if t.double_weights else 0)
            # LOAD: weights due before the tile, its channel blocks' rows, then a share of
            # the next group's weights (streamed while this group computes).
            loads = list(weights_before.get(ti, []))
            py0 = r0 * sh  # first padded input row of the tile
            n_rows = (rows - 1) * sh + (g.kh - 1) * dh + 1
            if t.hw_pad:
                iy0, iy1 = py0 - top, py0 - top + n_rows
                yp0, yp1 = max(0, -iy0), max(0, iy1 - g.h)
                y0, y_size = max(iy0, 0), n_rows - yp0 - yp1
                xp0, xp1 = left, right
            else:
                yp0 = yp1 = xp0 = xp1 = 0
                y0, y_size = py0, n_rows
            for c in range(t.cb):
                loads.append(dict(
                    mem="INP", sram_base=slot * inp_half + c * cb_stride,
                    dram_base=inp_dram + (((n * t.cb + c) * t.hd + y0) * t.wd) * m,
                    x_size=t.wd, y_size=y_size, x_stride=t.wd, planes=m,
                    pad=(yp0, yp1, xp0, xp1), pad_code=plan.pad_code if t.hw_pad else 0))
            loads[0]["pop_next"] = ti >= 2  # the slot (and weight half) are free again
            loads[-1]["push_next"] = True  # the tile is in SRAM
            loads += weights_after.get(ti, [])
            for ld in loads:
                p.load(ld.pop("mem"), **ld)
            # COMPUTE: clear the accumulator slot, then all branches of the tile in one GEMM.
            entries = rows * g.ow * obg
            p.gemm(uop_bgn=slot, uop_end=slot + 1, reset=True, iter_out=rows,
                   iter_in=g.ow * obg, dst_factor=(g.ow * obg, 1), pop_prev=True,
                   pop_next=ti >= 2)
            base = variant_base[slot, half]
            p.gemm(uop_bgn=base, uop_end=base + obg * taps, iter_out=rows, iter_in=g.ow,
                   a_bits=m, w_bits=k, dst_factor=(g.ow * obg, obg),
                   src_factor=(sh * t.wp * m, sw * m), push_prev=ti + 2 < total,
                   push_next=True)
            # STORE: positions are rows of obg output blocks in the [N][OH][OW][OB] image.
            p.store(sram_base=slot * acc_half,
                    dram_base=out_dram + ((n * g.oh + r0) * g.ow) * t.ob + ob0,
                    x_size=obg, y_size=entries // obg, x_stride=t.ob,
                    out_bytes=t.out_bytes, pop_prev=True, push_prev=ti + 2 < total)
    except ValueError as err:  # a field does not fit its bits
        raise NotOffloadable(f"the program does not encode: {err}") from err
    return LoweredLayer(g, t, cfg, p, dram, inp_off, out_off, plan.pad_code, plan.layer.act_lo,
                        plan.layer.act_shift)
