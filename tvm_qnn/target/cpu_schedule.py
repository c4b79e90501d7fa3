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
from .base import QnnTarget


@dataclass(frozen=True)
class CpuKnobs:
    """Schedule knobs of one layer (the tuning issue searches these)."""

    ow_tile: int = 4  # output columns per register tile (conv)
    oh_tile: int = 1  # output rows per register tile (conv)
    oc_vectors: int = 1  # weight vectors (of oc_block channels) per register tile
    # Unroll the loops under each parallel task up to this many steps (TVM's
    # ``pragma_auto_unroll_max_step``; 0: only the register tile is unrolled).
    unroll_max_step: int = 0
    row_tile: int = 1  # batch rows per register tile (dense)
    # Layout (decided when the weights are packed); None: the target's default.
    oc_block: int | None = None  # output channels per weight vector (power of two)
    word_bits: int | None = None  # 64: popcount on 64-bit lanes; 8: byte lanes (NEON cnt)
    parallel: bool = True
    # Convs with at least this many branches (M·K) use the plain integer kernel: measured on
    # the 8-bit first conv of CNV_2W2A (W6A8, 48 branches, im2col): 0.156 ms bit-serial.
    # 17: an int32 multiply-add per 16 lanes beats 17+ popcounts per 64 (None: never).
    integer_min_branches: int | None = 17
    # (ow_tile, oh_tile, oc_block) for single-branch (W1A1) convs, else the knobs above.
    # Measured on the AVX-512 suite convs (chained, one core): 2x2 positions x 32 channels
    # took conv56 from 0.79 to 0.84 of the roofline, but made W2A2 up to 18 % slower, so it
    # applies to one branch only. None: the same knobs for every bit width.
    single_branch: tuple[int, int, int] | None = None
    # Pack a conv's NCHW codes into bit-planes with the output columns as one vector (the
    # 64 channel bits outside): measured on the suite convs alone, conv56 1.2-1.5x faster,
    # conv28 1.3x slower. A tuning choice (both variants are design spaces), off by default.
    vector_pack: bool = False
    # Below this many xor-popcounts a layer runs on one core: starting the thread pool costs
    # more than it saves (measured: the demo CNN's 28x28 layers were slower on 2 threads).
    min_parallel_popcounts: int = 1 << 20


#: The values of ``unroll_max_step`` that tuning explores (512 was dropped: never faster on
#: the suite, up to 1.8x slower on conv7 W2A2, and slow to build).
UNROLL_STEPS = (0, 16, 64)


def _parallel_worth_it(sch: s_tir.Schedule, knobs: CpuKnobs) -> bool:
    """``knobs.parallel``, unless the layer's branch work is below the threshold."""
    block = sch.get(sch.get_sblock(bs.BRANCH_BLOCK))
    work = 1
    for iv in block.iter_vars:
        work *= int(iv.dom.extent)
    return knobs.parallel and work >= knobs.min_parallel_popcounts


def _branches(sch: s_tir.Schedule) -> int | None:
    """M·K of a bit-serial kernel (the extents of its two plane loops); None for the integer
    kernel."""
    if _has_block(sch, bs.INT_INPUT_BLOCK):
        return None
    block = sch.get(sch.get_sblock(bs.CHUNK_BLOCK if _has_block(sch, bs.CHUNK_BLOCK)
                                   else bs.BRANCH_BLOCK))
    planes = [iv for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce][:2]
    if _has_block(sch, bs.CHUNK_BLOCK):  # the chunk block keeps i, j as spatial vars
        rank = len(sch.get(sch.get_sblock(bs.BRANCH_BLOCK)).iter_vars) - len(
            [iv for iv in sch.get(sch.get_sblock(bs.BRANCH_BLOCK)).iter_vars
             if iv.iter_type == tirx.IterVar.CommReduce])
        planes = block.iter_vars[rank:rank + 2]
    return int(planes[0].dom.extent) * int(planes[1].dom.extent)


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


def _tile_split(sch: s_tir.Schedule, loop, tile: int, sample: bool, max_tile: int):
    """Split ``loop`` into (outer, register tile): the knob's largest divisor, or sampled.

    With ``sample`` the factors come from ``sample_perfect_tile``, so MetaSchedule's tile-size
    mutator explores them (the tuning template).
    """
    if sample:
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_tile)
    else:
        extent = int(sch.get(loop).extent)
        factors = [None, _largest_divisor_at_most(extent, tile)]
    return sch.split(loop, factors)


def schedule_conv2d(sch: s_tir.Schedule, knobs: CpuKnobs = CpuKnobs(),
                    sample: bool = False) -> s_tir.Schedule:
    """Schedule a bit-serial conv2d layer PrimFunc in place (and return ``sch``).

    ``sample``: leave the register tile (rows × columns) to ``sample_perfect_tile`` decisions,
    the design space MetaSchedule searches.
    """
    knobs = replace(knobs, parallel=_parallel_worth_it(sch, knobs))
    epi = sch.get_sblock(bs.EPILOGUE_BLOCK)
    branch = sch.get_sblock(bs.BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[4])
    if knobs.single_branch and _branches(sch) == 1:
        knobs = replace(knobs, ow_tile=knobs.single_branch[0], oh_tile=knobs.single_branch[1])
    if sch.get(epi).annotations.get(bs.LAYOUT_ATTR) == "NHWC":
        n, oh, ow, oc = sch.get_loops(epi)
    else:
        n, oc, oh, ow = sch.get_loops(epi)
    ocb, oci = sch.split(oc, [None, oc_inner])
    ocbo, ocbi = _tile_split(sch, ocb, knobs.oc_vectors, sample, max_tile=4)
    oho, ohi = _tile_split(sch, oh, knobs.oh_tile, sample, max_tile=4)
    owo, owi = _tile_split(sch, ow, knobs.ow_tile, sample, max_tile=8)
    sch.reorder(n, ocbo, oho, owo, ohi, owi, ocbi, oci)
    # Unit loops kept so the loop list has a fixed shape whatever the tile sizes:
    # [n, ocbo, oho, owo | n', ob', oh', ow', oi' | i, j, (ry, rx,) rw].
    n_red = _reduction_loops(sch, branch)
    sch.compute_at(branch, owo, preserve_unit_loops=True)
    sch.set_scope(branch, 0, "local")
    loops = sch.get_loops(branch)
    tile_ob, tile_oh, tile_ow, tile_oc = loops[-n_red - 4:-n_red]
    reduction = loops[-n_red:]
    sch.reorder(*reduction, tile_oh, tile_ow, tile_ob, tile_oc)
    _schedule_chunks(sch, branch, reduction[-1])
    sch.vectorize(tile_oc)
    for loop in (tile_ob, tile_ow, tile_oh, ocbi, owi, ohi):
        sch.unroll(loop)
    sch.vectorize(oci)
    fused = sch.fuse(n, ocbo, oho)
    if knobs.parallel:
        sch.parallel(fused)
    _unroll_pragma(sch, fused, knobs, sample)
    _schedule_producers(sch, knobs)
    # Last: parallel() needs the reduction block whole (init not yet split off).
    _decompose_reductions(sch, branch, reduction[0])
    return sch


def schedule_dense(sch: s_tir.Schedule, knobs: CpuKnobs = CpuKnobs(),
                   sample: bool = False) -> s_tir.Schedule:
    """Schedule a bit-serial dense layer PrimFunc in place (and return ``sch``).

    ``sample``: leave the register tile of batch rows to a ``sample_perfect_tile`` decision.
    """
    knobs = replace(knobs, parallel=_parallel_worth_it(sch, knobs))
    epi = sch.get_sblock(bs.EPILOGUE_BLOCK)
    branch = sch.get_sblock(bs.BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[2])
    r, oc = sch.get_loops(epi)
    ro, ri = _tile_split(sch, r, knobs.row_tile, sample, max_tile=4)
    ocb, oci = sch.split(oc, [None, oc_inner])
    ocbo, ocbi = _tile_split(sch, ocb, knobs.oc_vectors, sample, max_tile=4)
    sch.reorder(ocbo, ro, ri, ocbi, oci)
    # [ocbo, ro | r', ob', oi' | i, j, rw] with unit loops kept.
    sch.compute_at(branch, ro, preserve_unit_loops=True)
    sch.set_scope(branch, 0, "local")
    loops = sch.get_loops(branch)
    tile_r, tile_ob, tile_oc, reduction = loops[-6], loops[-5], loops[-4], loops[-3:]
    sch.reorder(*reduction, tile_r, tile_ob, tile_oc)
    _schedule_chunks(sch, branch, reduction[-1])
    sch.vectorize(tile_oc)
    for loop in (tile_ob, tile_r, ocbi):
        sch.unroll(loop)
    sch.vectorize(oci)
    fused = sch.fuse(ocbo, ro)
    if knobs.parallel:
        sch.parallel(fused)
    _unroll_pragma(sch, fused, knobs, sample)
    _schedule_producers(sch, knobs)
    _decompose_reductions(sch, branch, reduction[0])
    return sch


def _unroll_pragma(sch: s_tir.Schedule, loop, knobs: CpuKnobs, sample: bool) -> None:
    """Let LLVM see the (plane, tap, word) reduction unrolled up to ``unroll_max_step``.

    Sampled: a categorical decision on the root block that MetaSchedule's unroll mutator
    explores and its ``RewriteParallelVectorizeUnroll`` postprocessor turns into the pragma.
    """
    if sample:
        step = sch.sample_categorical(candidates=list(UNROLL_STEPS),
                                      probs=[1 / len(UNROLL_STEPS)] * len(UNROLL_STEPS))
        sch.annotate(sch.get_sblock("root"), "meta_schedule.unroll_explicit", step)
    elif knobs.unroll_max_step:
        sch.annotate(loop, "pragma_auto_unroll_max_step", knobs.unroll_max_step)
        sch.annotate(loop, "pragma_unroll_explicit", 1)


def _schedule_chunks(sch: s_tir.Schedule, branch, word_loop) -> None:
    """Byte words: sum each chunk of popcounts in uint8 lanes inside the word loop.

    The chunk block is computed at ``word_loop`` (the branch block's outer word loop), its
    own reduction outermost and the register tile (positions × output channels) inside it,
    the channels as one vector: NEON ``cnt`` + byte ``add`` per 128 bits, no widening.
    """
    if not _has_block(sch, bs.CHUNK_BLOCK):
        return
    chunk = sch.get_sblock(bs.CHUNK_BLOCK)
    rank = sum(1 for iv in sch.get(branch).iter_vars if iv.iter_type == tirx.IterVar.DataPar)
    depth = next(k for k, lp in enumerate(sch.get_loops(branch))
                 if sch.get(lp).same_as(sch.get(word_loop)))
    sch.compute_at(chunk, word_loop, preserve_unit_loops=True)
    sch.set_scope(chunk, 0, "local")
    # One loop per block var: the branch's output dims, (i, j, taps, word chunk), the words.
    own = sch.get_loops(chunk)[depth + 1:]
    vector, words = own[rank - 1], own[-1]  # the output channels; the words of a chunk
    others = own[:rank - 1] + own[rank:-1]
    sch.reorder(words, *others, vector)
    sch.vectorize(vector)
    for loop in others:
        sch.unroll(loop)


def _conv_pack(sch: s_tir.Schedule) -> bool:
    """True when the kernel packs its input itself, as a conv (NCHW or im2col windows)."""
    return (_has_block(sch, bs.PACK_BLOCK)
            and len(sch.get_loops(sch.get_sblock(bs.PACK_BLOCK))) == 7)


def _decompose_reductions(sch: s_tir.Schedule, branch, first_reduction) -> None:
    """Split the init statements off the reduction blocks (last: ``parallel`` needs them)."""
    if _has_block(sch, bs.CHUNK_BLOCK):
        chunk = sch.get_sblock(bs.CHUNK_BLOCK)
        # The words loop: the chunk's outermost loop of its own (not shared with the branches).
        shared = [sch.get(lp) for lp in sch.get_loops(branch)]
        words = next(lp for lp in sch.get_loops(chunk)
                     if not any(sch.get(lp).same_as(x) for x in shared))
        init = sch.decompose_reduction(chunk, words)
        sch.vectorize(sch.get_loops(init)[-1])
    sch.decompose_reduction(branch, first_reduction)


def _schedule_producers(sch: s_tir.Schedule, knobs: CpuKnobs) -> None:
    """Activation packing and the window popcount: parallel over their outer loops."""
    for name in (bs.PACK_BLOCK, bs.ROWSUM_BLOCK, bs.INT_INPUT_BLOCK):
        if not _has_block(sch, name):
            continue
        if name == bs.PACK_BLOCK and knobs.vector_pack and _conv_pack(sch):
            _vector_pack(sch, knobs)
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


def _vector_pack(sch: s_tir.Schedule, knobs: CpuKnobs) -> None:
    """The conv pack (loops n, g, plane, row, column, word, bit) as column vectors: for each
    channel bit, one contiguous row of NCHW codes is loaded, shifted and or-ed into the row's
    words."""
    pack = sch.get_sblock(bs.PACK_BLOCK)
    nn, g, i, yy, xx, word, b = sch.get_loops(pack)
    sch.reorder(word, b, xx)
    rows = sch.fuse(nn, g, i, yy)
    if knobs.parallel:
        sch.parallel(rows)
    sch.vectorize(xx)


class CpuTarget(QnnTarget):
    """An LLVM CPU target scheduled by this module (x86, ARM); ``self.knobs`` are its knobs."""

    knobs: CpuKnobs

    def template(self, kind: str, sample: bool = False):
        """``f(sch)``: the schedule of ``kind`` with this target's knobs (or sampled tiles)."""
        fn = schedule_conv2d if kind == "conv2d" else schedule_dense
        return lambda sch: fn(sch, self.knobs, sample=sample)

    def schedule(self, kind, func):
        sch = s_tir.Schedule(func)
        self.template(kind)(sch)
        return sch.mod["main"]

    def schedule_space(self, kind):
        """``f(sch) -> [sch, ...]``: the design spaces of ``kind`` (sampled register tiles and
        unroll depth), one per packing variant of a conv that packs its own input."""
        fn = schedule_conv2d if kind == "conv2d" else schedule_dense

        def space(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
            variants = [(sch, self.knobs)]
            if kind == "conv2d" and _conv_pack(sch):
                other = replace(self.knobs, vector_pack=not self.knobs.vector_pack)
                variants.append((sch.copy(), other))
            for s, knobs in variants:
                fn(s, knobs, sample=True)
            return [s for s, _ in variants]

        return space
