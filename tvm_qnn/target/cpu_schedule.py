# SPDX-License-Identifier: Apache-2.0
"""TensorIR schedules of the bit-serial layer PrimFuncs for LLVM CPUs (x86 and ARM).

Layout of the work (``DESIGN.md`` §6): output channels innermost, ``OCi`` of them in one
vector of uint64 lanes, each xor-ed with the same broadcast activation word; a few output
positions unrolled so the accumulators stay in registers; the (plane, tap, word) reduction
outside them; the outer spatial loops parallel over the cores. LLVM turns the vector popcount
into ``vpopcntq`` (AVX-512 VPOPCNTDQ), ``vpshufb`` lookups (AVX2) or ``cnt`` + pairwise
widening adds (NEON).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tvm import s_tir, tirx

from ..topi import bitserial as bs


@dataclass(frozen=True)
class CpuKnobs:
    """Schedule knobs of one layer (the tuning issue searches these)."""

    ow_tile: int = 4  # output positions per register tile (conv)
    row_tile: int = 1  # batch rows per register tile (dense)
    parallel: bool = True
    # Below this many xor-popcounts a layer runs on one core: starting the thread pool costs
    # more than it saves (measured: the demo CNN's 28x28 layers were slower on 2 threads).
    min_parallel_popcounts: int = 1 << 20


def _parallel_worth_it(sch: s_tir.Schedule, knobs: CpuKnobs) -> bool:
    """``knobs.parallel``, unless the layer's branch work is below the threshold."""
    block = sch.get(sch.get_sblock(bs.BRANCH_BLOCK))
    work = 1
    for iv in block.iter_vars:
        work *= int(iv.dom.extent)
    return knobs.parallel and work >= knobs.min_parallel_popcounts


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
        return False


def _parallel_outer(sch: s_tir.Schedule, block, spatial: int, enabled: bool) -> None:
    """Fuse the first ``spatial`` loops of ``block`` and run them in parallel."""
    loops = sch.get_loops(block)[:spatial]
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if enabled:
        sch.parallel(fused)


def _reduction_loops(sch: s_tir.Schedule, block) -> int:
    return sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == tirx.IterVar.CommReduce)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    for f in range(min(n, cap), 0, -1):
        if n % f == 0:
            return f
    return 1


def schedule_conv2d(sch: s_tir.Schedule, knobs: CpuKnobs = CpuKnobs()) -> s_tir.Schedule:
    """Schedule a bit-serial conv2d layer PrimFunc in place (and return ``sch``)."""
    knobs = replace(knobs, parallel=_parallel_worth_it(sch, knobs))
    epi = sch.get_sblock(bs.EPILOGUE_BLOCK)
    branch = sch.get_sblock(bs.BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[4])
    n, oc, oh, ow = sch.get_loops(epi)
    ow_extent = int(sch.get(ow).extent)
    ocb, oci = sch.split(oc, [None, oc_inner])
    owo, owi = sch.split(ow, [None, _largest_divisor_at_most(ow_extent, knobs.ow_tile)])
    sch.reorder(n, ocb, oh, owo, owi, oci)
    # Unit loops kept so the loop list has a fixed shape whatever the tile sizes:
    # [n, ocb, oh, owo | n', ob', oh', ow', oi' | i, j, (ry, rx,) rw].
    n_red = _reduction_loops(sch, branch)
    sch.compute_at(branch, owo, preserve_unit_loops=True)
    sch.set_scope(branch, 0, "local")
    loops = sch.get_loops(branch)
    tile_ow, tile_oc, reduction = loops[-n_red - 2], loops[-n_red - 1], loops[-n_red:]
    sch.reorder(*reduction, tile_ow, tile_oc)
    sch.vectorize(tile_oc)
    sch.unroll(tile_ow)
    sch.vectorize(oci)
    sch.unroll(owi)
    fused = sch.fuse(n, ocb, oh)
    if knobs.parallel:
        sch.parallel(fused)
    _schedule_producers(sch, knobs)
    # Last: parallel() needs the reduction block whole (init not yet split off).
    sch.decompose_reduction(branch, reduction[0])
    return sch


def schedule_dense(sch: s_tir.Schedule, knobs: CpuKnobs = CpuKnobs()) -> s_tir.Schedule:
    """Schedule a bit-serial dense layer PrimFunc in place (and return ``sch``)."""
    knobs = replace(knobs, parallel=_parallel_worth_it(sch, knobs))
    epi = sch.get_sblock(bs.EPILOGUE_BLOCK)
    branch = sch.get_sblock(bs.BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[2])
    r, oc = sch.get_loops(epi)
    rows = int(sch.get(r).extent)
    ro, ri = sch.split(r, [None, _largest_divisor_at_most(rows, knobs.row_tile)])
    ocb, oci = sch.split(oc, [None, oc_inner])
    sch.reorder(ocb, ro, ri, oci)
    # [ocb, ro | r', ob', oi' | i, j, rw] with unit loops kept.
    sch.compute_at(branch, ro, preserve_unit_loops=True)
    sch.set_scope(branch, 0, "local")
    loops = sch.get_loops(branch)
    tile_r, tile_oc, reduction = loops[-6], loops[-4], loops[-3:]
    sch.reorder(*reduction, tile_r, tile_oc)
    sch.vectorize(tile_oc)
    sch.unroll(tile_r)
    sch.vectorize(oci)
    fused = sch.fuse(ocb, ro)
    if knobs.parallel:
        sch.parallel(fused)
    _schedule_producers(sch, knobs)
    sch.decompose_reduction(branch, reduction[0])
    return sch


def _schedule_producers(sch: s_tir.Schedule, knobs: CpuKnobs) -> None:
    """Activation packing and the window popcount: parallel over their outer loops."""
    for name in (bs.PACK_BLOCK, bs.ROWSUM_BLOCK):
        if not _has_block(sch, name):
            continue
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        n_spatial = sum(1 for iv in sch.get(block).iter_vars
                        if iv.iter_type == tirx.IterVar.DataPar)
        # Parallelize all but the innermost spatial loop (the words, usually few).
        outer = max(1, n_spatial - 1)
        fused = sch.fuse(*loops[:outer]) if outer > 1 else loops[0]
        if knobs.parallel:
            sch.parallel(fused)
        if name == bs.PACK_BLOCK:
            sch.unroll(loops[-1])
