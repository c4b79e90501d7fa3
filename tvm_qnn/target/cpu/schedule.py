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

import math
from dataclasses import replace

import tvm
from tvm import s_tir, tirx

from ...topi.attrs import (
    BRANCH_BLOCK,
    CHUNK_BLOCK,
    DOT8_GROUPS_ATTR,
    DOT8_INPUT_BLOCK,
    DOT8_WINDOW_ATTR,
    EPILOGUE_BLOCK,
    INLINE_ATTR,
    INT_INPUT_BLOCK,
    LAYOUT_ATTR,
    LUT_ATTR,
    LUT_TABLE_BLOCK,
    PACK_BLOCK,
    ROWSUM_BLOCK,
)
from .config import LUT_NARROW_WIDTH, UNROLL_STEPS, ScheduleConfig

#: The scope of the register tiles (branch sums, byte-word chunks) and of the tensor
#: intrinsics' accumulators. Not "local": TVM 0.27 (tirx.LowerTVMBuiltin) keeps only "global"
#: allocations under 1 KiB on the stack and puts every other one in TVMBackendAllocWorkspace
#: heap memory, which LLVM cannot keep in registers; inside a parallel loop it cannot even
#: hoist the weight loads past the tile's stores. Measured (CNV_1W1A, x86:haswell code, one
#: Zen 4 core, min of 8 rounds): first conv's branch sums 0.0028 ms serial, 0.0113 parallel;
#: whole model 0.0768 -> 0.0738 ms serial, code for 2 threads on one 0.1064 -> 0.0739.
TILE_SCOPE = "global"


def _parallel_worth_it(sch: s_tir.Schedule, config: ScheduleConfig) -> bool:
    """``config.parallel``, unless the layer's branch work is below the threshold.

    The work is the branch block's iterations: (outputs × planes × taps × word chunks) of a
    bit-serial kernel. A table-lookup kernel's branch block sums whole chunks per weight plane
    and row of taps; its work is counted from its chunk block the same way, (outputs × weight
    planes × taps × word chunks), without the words, halves and table entries inside a chunk.
    """
    if _has_block(sch, LUT_TABLE_BLOCK):
        chunk = sch.get(sch.get_sblock(CHUNK_BLOCK))
        reduction = [iv for iv in chunk.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
        counted = [iv for iv in chunk.iter_vars if iv.iter_type == tirx.IterVar.DataPar] \
            + reduction[:-3]  # a whole-row chunk keeps its taps (rx), not (words, half, v)
    else:
        counted = sch.get(sch.get_sblock(BRANCH_BLOCK)).iter_vars
    work = 1
    for iv in counted:
        work *= int(iv.dom.extent)
    return config.parallel and work >= config.min_parallel_popcounts


def _branches(sch: s_tir.Schedule) -> int | None:
    """M·K of a bit-serial kernel (the extents of its two plane loops); None for the integer
    and table-lookup kernels."""
    if _has_block(sch, INT_INPUT_BLOCK) or _has_block(sch, LUT_TABLE_BLOCK):
        return None
    block = sch.get(sch.get_sblock(CHUNK_BLOCK if _has_block(sch, CHUNK_BLOCK)
                                   else BRANCH_BLOCK))
    planes = [iv for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce][:2]
    if _has_block(sch, CHUNK_BLOCK):  # the chunk block keeps i, j as spatial vars
        rank = len(sch.get(sch.get_sblock(BRANCH_BLOCK)).iter_vars) - len(
            [iv for iv in sch.get(sch.get_sblock(BRANCH_BLOCK)).iter_vars
             if iv.iter_type == tirx.IterVar.CommReduce])
        planes = block.iter_vars[rank:rank + 2]
    return int(planes[0].dom.extent) * int(planes[1].dom.extent)


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - TVM raises a generic error for a missing block
        return False


def _reduction_loops(sch: s_tir.Schedule, block) -> int:
    return sum(1 for iv in sch.get(block).iter_vars if iv.iter_type == tirx.IterVar.CommReduce)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    for f in range(min(n, cap), 0, -1):
        if n % f == 0:
            return f
    return 1


def _tile_split(sch: s_tir.Schedule, loop, tile: int, sample: bool, max_tile: int):
    """Split ``loop`` into (outer, register tile): the config's largest divisor, or sampled.

    With ``sample`` the factors come from ``sample_perfect_tile``, so MetaSchedule's tile-size
    mutator explores them (the tuning template).
    """
    if sample:
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_tile)
    else:
        extent = int(sch.get(loop).extent)
        factors = [None, _largest_divisor_at_most(extent, tile)]
    return sch.split(loop, factors)


def schedule_conv2d(sch: s_tir.Schedule, config: ScheduleConfig = ScheduleConfig(),
                    sample: bool = False) -> s_tir.Schedule:
    """Schedule a bit-serial conv2d layer PrimFunc in place (and return ``sch``).

    ``sample``: leave the register tile (rows × columns) to ``sample_perfect_tile`` decisions,
    the design space MetaSchedule searches.
    """
    config = replace(config, parallel=_parallel_worth_it(sch, config))
    epi = sch.get_sblock(EPILOGUE_BLOCK)
    branch = sch.get_sblock(BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[4])
    if sch.get(epi).annotations.get(LAYOUT_ATTR) == "NHWC":
        n, oh, ow, oc = sch.get_loops(epi)
    else:
        n, oc, oh, ow = sch.get_loops(epi)
    if config.dot8_tile and _has_block(sch, DOT8_INPUT_BLOCK):
        config = replace(config, ow_tile=config.dot8_tile[0], oh_tile=config.dot8_tile[1],
                         oc_vectors=config.dot8_tile[2])
    elif _has_block(sch, LUT_TABLE_BLOCK):
        narrow = int(sch.get(ow).extent) <= LUT_NARROW_WIDTH  # e.g. a dense of 1-2 rows
        config = replace(config, ow_tile=config.lut_tile[0], oh_tile=config.lut_tile[1],
                         oc_vectors=config.lut_narrow_oc_vectors if narrow
                         else config.lut_tile[2])
    elif config.single_branch_tile and _branches(sch) == 1:
        config = replace(config, ow_tile=config.single_branch_tile[0],
                         oh_tile=config.single_branch_tile[1])
    ocb, oci = sch.split(oc, [None, oc_inner])
    ocbo, ocbi = _tile_split(sch, ocb, config.oc_vectors, sample, max_tile=4)
    oho, ohi = _tile_split(sch, oh, config.oh_tile, sample, max_tile=4)
    owo, owi = _tile_split(sch, ow, config.ow_tile, sample, max_tile=8)
    # Parallel: rows outermost, each core reading its own rows' inputs (lookup tables) and
    # writing whole rows, unless the weights are big (rows_first_max_weight_bytes).
    rows_first = config.parallel and \
        _weight_bytes(sch) <= config.rows_first_max_weight_bytes
    outer = (n, oho, ocbo) if rows_first else (n, ocbo, oho)
    sch.reorder(*outer, owo, ohi, owi, ocbi, oci)
    # Unit loops kept so the loop list has a fixed shape whatever the tile sizes:
    # [*outer, owo | n', ob', oh', ow', oi' | i, j, (ry, rx,) rw].
    n_red = _reduction_loops(sch, branch)
    sch.compute_at(branch, owo, preserve_unit_loops=True)
    sch.set_scope(branch, 0, TILE_SCOPE)
    loops = sch.get_loops(branch)
    tile_ob, tile_oh, tile_ow, tile_oc = loops[-n_red - 4:-n_red]
    reduction = loops[-n_red:]
    _finish(sch, config, sample, branch, reduction,
            tile=(tile_oh, tile_ow, tile_ob, tile_oc),
            unrolled=(tile_ob, tile_ow, tile_oh, ocbi, owi, ohi), vector=oci,
            outer=outer)
    return sch


def _weight_bytes(sch: s_tir.Schedule) -> int:
    """Bytes of the packed weights: a layer PrimFunc's second parameter (``layer_compute``
    takes the data, the weights, then the epilogue's constants)."""
    weight = sch.mod["main"].params[1]  # carries its buffer's shape and dtype
    return math.prod(int(e) for e in weight.shape) * tvm.DataType(weight.dtype).bits // 8


def schedule_dense(sch: s_tir.Schedule, config: ScheduleConfig = ScheduleConfig(),
                   sample: bool = False) -> s_tir.Schedule:
    """Schedule a bit-serial dense layer PrimFunc in place (and return ``sch``).

    ``sample``: leave the register tile of batch rows to a ``sample_perfect_tile`` decision.
    """
    config = replace(config, parallel=_parallel_worth_it(sch, config))
    epi = sch.get_sblock(EPILOGUE_BLOCK)
    branch = sch.get_sblock(BRANCH_BLOCK)
    oc_inner = int(sch.get(branch).writes[0].source.shape[2])
    r, oc = sch.get_loops(epi)
    ro, ri = _tile_split(sch, r, config.row_tile, sample, max_tile=4)
    ocb, oci = sch.split(oc, [None, oc_inner])
    ocbo, ocbi = _tile_split(sch, ocb, config.dense_oc_vectors or config.oc_vectors, sample,
                             max_tile=4)
    sch.reorder(ocbo, ro, ri, ocbi, oci)
    # [ocbo, ro | r', ob', oi' | i, j, rw] with unit loops kept.
    sch.compute_at(branch, ro, preserve_unit_loops=True)
    sch.set_scope(branch, 0, TILE_SCOPE)
    loops = sch.get_loops(branch)
    tile_r, tile_ob, tile_oc, reduction = loops[-6], loops[-5], loops[-4], loops[-3:]
    _finish(sch, config, sample, branch, reduction, tile=(tile_r, tile_ob, tile_oc),
            unrolled=(tile_ob, tile_r, ocbi), vector=oci, outer=(ocbo, ro))
    return sch


def _finish(sch: s_tir.Schedule, config: ScheduleConfig, sample: bool, branch, reduction,
            tile, unrolled, vector, outer) -> None:
    """The tail both templates share, once the branch block sits in the register ``tile``
    (its loops, outermost first, the output channels last): the (plane, tap, word) reduction
    outside the tile, the channels as one vector, the tile unrolled, the ``outer`` loops fused
    and parallel, the producers scheduled, the init blocks split off."""
    if _has_block(sch, DOT8_INPUT_BLOCK):
        # An int8-dot kernel: its channel groups split into the target's dot steps, each
        # step (output channels x groups x 4 taps) innermost for the target to tensorize.
        ry, rx, rq, r4 = reduction
        groups = int(sch.get(branch).annotations.get(DOT8_GROUPS_ATTR, 1))
        if groups > 1:
            rqo, rqi = sch.split(rq, [None, groups])
            sch.reorder(ry, rx, rqo, *tile, rqi, r4)
        else:  # a unit groups loop would vanish from the pattern the target matches
            sch.reorder(ry, rx, rq, *tile, r4)
    else:
        sch.reorder(*reduction, *tile)
        _schedule_chunks(sch, branch, reduction[-1])
        sch.vectorize(tile[-1])
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vector)
    fused = sch.fuse(*outer)
    if config.parallel:
        sch.parallel(fused)
    _unroll_pragma(sch, fused, config, sample)
    _schedule_producers(sch, config)
    # Last: parallel() needs the reduction block whole (init not yet split off).
    _decompose_reductions(sch, branch, reduction[0])


def _unroll_pragma(sch: s_tir.Schedule, loop, config: ScheduleConfig, sample: bool) -> None:
    """Let LLVM see the (plane, tap, word) reduction unrolled up to ``unroll_max_step``.

    Sampled: a categorical decision on the root block that MetaSchedule's unroll mutator
    explores and its ``RewriteParallelVectorizeUnroll`` postprocessor turns into the pragma.
    """
    if sample:
        step = sch.sample_categorical(candidates=list(UNROLL_STEPS),
                                      probs=[1 / len(UNROLL_STEPS)] * len(UNROLL_STEPS))
        sch.annotate(sch.get_sblock("root"), "meta_schedule.unroll_explicit", step)
    elif config.unroll_max_step:
        sch.annotate(loop, "pragma_auto_unroll_max_step", config.unroll_max_step)
        sch.annotate(loop, "pragma_unroll_explicit", 1)


def _schedule_chunks(sch: s_tir.Schedule, branch, word_loop) -> None:
    """Byte words: sum each chunk of popcounts in uint8 lanes inside the word loop.

    The chunk block is computed at ``word_loop`` (the branch block's outer word loop), its
    own reduction outermost and the register tile (positions × output channels) inside it,
    the channels as one vector: NEON ``cnt`` + byte ``add`` per 128 bits, no widening.
    """
    if not _has_block(sch, CHUNK_BLOCK):
        return
    chunk = sch.get_sblock(CHUNK_BLOCK)
    rank = sum(1 for iv in sch.get(branch).iter_vars if iv.iter_type == tirx.IterVar.DataPar)
    depth = next(k for k, lp in enumerate(sch.get_loops(branch))
                 if sch.get(lp).same_as(sch.get(word_loop)))
    sch.compute_at(chunk, word_loop, preserve_unit_loops=True)
    sch.set_scope(chunk, 0, TILE_SCOPE)
    own = sch.get_loops(chunk)[depth + 1:]
    if sch.get(chunk).annotations.get(LUT_ATTR):
        _schedule_lookups(sch, chunk, own)
        return
    # One loop per block var: the branch's output dims, (i, j, taps, word chunk), the words.
    vector, words = own[rank - 1], own[-1]  # the output channels; the words of a chunk
    others = own[:rank - 1] + own[rank:-1]
    sch.reorder(words, *others, vector)
    sch.vectorize(vector)
    for loop in others:
        sch.unroll(loop)


def _schedule_lookups(sch: s_tir.Schedule, chunk, own) -> None:
    """A table-lookup chunk (loops: the branch's output positions, its outer reduction vars,
    the output channels (one loop, or two: ``LUT_ATTR``), then its own reduction: taps and
    words, halves, the 16 table entries): the taps, words and halves outermost, the register
    tile inside them unrolled, and innermost the (output channels × entries) loops that the
    target replaces by one lookup step."""
    spatial = sum(1 for iv in sch.get(chunk).iter_vars if iv.iter_type == tirx.IterVar.DataPar)
    lane_dims = int(sch.get(chunk).annotations[LUT_ATTR])
    lanes, entries = own[spatial - lane_dims:spatial], own[-1]
    reduction = own[spatial:-1]
    others = own[:spatial - lane_dims]
    sch.reorder(*reduction, *others, *lanes, entries)
    for loop in others:
        sch.unroll(loop)


def packs_conv_input(sch: s_tir.Schedule) -> bool:
    """True when the kernel packs its input itself, as a conv (NCHW or im2col windows)."""
    return (_has_block(sch, PACK_BLOCK)
            and len(sch.get_loops(sch.get_sblock(PACK_BLOCK))) == 7)


def _decompose_reductions(sch: s_tir.Schedule, branch, first_reduction) -> None:
    """Split the init statements off the reduction blocks (last: ``parallel`` needs them)."""
    if _has_block(sch, CHUNK_BLOCK):
        chunk = sch.get_sblock(CHUNK_BLOCK)
        # The words loop: the chunk's outermost loop of its own (not shared with the branches).
        shared = [sch.get(lp) for lp in sch.get_loops(branch)]
        words = next(lp for lp in sch.get_loops(chunk)
                     if not any(sch.get(lp).same_as(x) for x in shared))
        init = sch.decompose_reduction(chunk, words)
        sch.vectorize(sch.get_loops(init)[-1])
    sch.decompose_reduction(branch, first_reduction)


def _schedule_producers(sch: s_tir.Schedule, config: ScheduleConfig) -> None:
    """Activation packing and the window popcount: parallel over their outer loops."""
    for name in (PACK_BLOCK, ROWSUM_BLOCK, INT_INPUT_BLOCK, DOT8_INPUT_BLOCK, LUT_TABLE_BLOCK):
        if not _has_block(sch, name):
            continue
        if name == LUT_TABLE_BLOCK:
            _lookup_tables(sch, config)
            continue
        if name == PACK_BLOCK and config.vector_pack and packs_conv_input(sch):
            _vector_pack(sch, config)
            continue
        block = sch.get_sblock(name)
        if sch.get(block).annotations.get(INLINE_ATTR):
            sch.compute_inline(block)
            continue
        if sch.get(block).annotations.get(DOT8_WINDOW_ATTR):
            _window_input(sch, block, config)
            continue
        loops = sch.get_loops(block)
        if name == INT_INPUT_BLOCK and len(loops) == 5 and \
                int(sch.get(loops[3]).extent) >= _ROW_ORDER_MIN_WIDTH:
            _blocked_input(sch, block, config)
            continue
        n_spatial = sum(1 for iv in sch.get(block).iter_vars
                        if iv.iter_type == tirx.IterVar.DataPar)
        # Parallelize all but the innermost spatial loop (the words, usually few).
        outer = max(1, n_spatial - 1)
        fused = sch.fuse(*loops[:outer]) if outer > 1 else loops[0]
        if config.parallel:
            sch.parallel(fused)
        if name == PACK_BLOCK:
            sch.unroll(loops[-1])


# Measured (depthwise W4A4 integer kernels, NCHW input, one Zen 4 core, best of 7 alternated
# rounds, ms, channel order → row order): 32 ch 112² 0.51 → 0.42 (x86:haswell code 0.62 →
# 0.47), 96 ch 56² 0.35 → 0.33 (0.46 → 0.38), but 144 ch 28² 0.089 → 0.110 (0.124 → 0.115).
_ROW_ORDER_MIN_WIDTH = 48


def _lookup_tables(sch: s_tir.Schedule, config: ScheduleConfig) -> None:
    """The tables of a table-lookup kernel ([N, Hp, Wp, Cw, 2, 16]): both halves' tables of a
    word as one vector of 32 bytes, rows parallel."""
    block = sch.get_sblock(LUT_TABLE_BLOCK)
    nn, yy, _, _, half, entries = sch.get_loops(block)
    rows = sch.fuse(nn, yy)
    if config.parallel:
        sch.parallel(rows)
    sch.vectorize(sch.fuse(half, entries))


def _window_input(sch: s_tir.Schedule, block, config: ScheduleConfig) -> None:
    """The folded windows of an int8-dot conv of few channels ([N, OH, OW, K], K the window's
    taps × channels): each tap unrolled (its offsets constants) over a vector of output
    columns, read as contiguous input rows. Element by element, the window's index arithmetic
    and bounds tests cost more than the dot steps they save: measured (CNV_1W1A's first conv,
    1 → 32 channels 28², x86:haswell code, one Zen 4 core) 0.0120 ms unfolded, 0.0168 folded
    element by element, 0.0073 folded this way."""
    nn, yy, xx, k = sch.get_loops(block)
    sch.reorder(nn, yy, k, xx)
    rows = sch.fuse(nn, yy)
    if config.parallel:
        sch.parallel(rows)
    sch.unroll(k)
    sch.vectorize(xx)


def _blocked_input(sch: s_tir.Schedule, block, config: ScheduleConfig) -> None:
    """A depthwise integer kernel's NCHW codes copied into channel blocks ([N, C/OCi, Hp, Wp,
    OCi]) on wide maps: the columns innermost, so each channel's row is read in order (the
    channels innermost read a column across rows, H·W apart)."""
    nn, cb, yy, xx, ci = sch.get_loops(block)
    sch.reorder(nn, cb, yy, ci, xx)
    rows = sch.fuse(nn, cb, yy)
    if config.parallel:
        sch.parallel(rows)


def _vector_pack(sch: s_tir.Schedule, config: ScheduleConfig) -> None:
    """The conv pack (loops n, g, plane, row, column, word, bit) as column vectors: for each
    channel bit, one contiguous row of NCHW codes is loaded, shifted and or-ed into the row's
    words."""
    pack = sch.get_sblock(PACK_BLOCK)
    nn, g, i, yy, xx, word, b = sch.get_loops(pack)
    sch.reorder(word, b, xx)
    rows = sch.fuse(nn, g, i, yy)
    if config.parallel:
        sch.parallel(rows)
    sch.vectorize(xx)
