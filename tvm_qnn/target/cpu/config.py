# SPDX-License-Identifier: Apache-2.0
"""The parameters of the CPU schedule templates: one frozen value per target (and per tuning
candidate, where MetaSchedule samples the register tile and the unroll depth instead)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleConfig:
    """How :mod:`.schedule` schedules a layer on an LLVM CPU (the tuning issue searches these).

    The weight layout (channels per weight vector, word width) is the target's
    :class:`~tvm_qnn.topi.layout.Layout`, fixed when the weights are packed.
    """

    ow_tile: int = 4  # output columns per register tile (conv)
    oh_tile: int = 1  # output rows per register tile (conv)
    oc_vectors: int = 1  # weight vectors (of oc_block channels) per register tile
    # Unroll the loops under each parallel task up to this many steps (TVM's
    # ``pragma_auto_unroll_max_step``; 0: only the register tile is unrolled).
    unroll_max_step: int = 0
    row_tile: int = 1  # batch rows per register tile (dense)
    # Weight vectors per register tile of a bit-serial dense layer; None: ``oc_vectors``. A
    # dense layer of one row has no positions to share a weight vector with, only the
    # broadcast activation word across vectors; each class sets its own (target/x86).
    dense_oc_vectors: int | None = None
    parallel: bool = True
    # (ow_tile, oh_tile) for single-branch (W1A1) convs, else the tiles above. Measured on the
    # AVX-512 suite convs (chained, one core): 2x2 positions x 32 channels (the layout's
    # single_branch_oc_block) took conv56 from 0.79 to 0.84 of the roofline, but made W2A2 up
    # to 18 % slower, so it applies to one branch only. None: the same tile for every bit width.
    single_branch_tile: tuple[int, int] | None = None
    # (ow_tile, oh_tile, oc_vectors) for int8-dot convs (topi/dot8_conv.py), else the tiles
    # above; each x86 class sets its own (target/x86/dot8.py: DOT8_TILES, measured there).
    dot8_tile: tuple[int, int, int] | None = None
    # (ow_tile, oh_tile, oc_vectors) for table-lookup convs (topi/lut_conv.py): up to 8
    # columns (7 on 7-wide maps) share each weight vector. Measured (x86:haswell code, one Zen
    # 4 core, CNV's convs, branch sums alone): 4 x 1 x 1, reduced to 1 column on 7-wide
    # maps, 0.0197 ms on 128 ch 7²; 7 x 1 x 1 0.0124 ms; 32 ch 28²: 4 columns 0.0167, 7 0.0158.
    lut_tile: tuple[int, int, int] = (8, 1, 1)
    # Weight vectors of a table-lookup conv at most LUT_NARROW_WIDTH outputs wide (a dense
    # layer of 1-2 rows, as 1x1 convs over its rows), where few columns share each weight
    # vector: then each table serves several. Measured (x86:haswell code, one Zen 4 core,
    # 4096 -> 4096 dense, ms with 1 / 2 / 4 vectors): 1 row W1A2 0.073 / 0.066 / 0.058, W2A2
    # 0.160 / 0.125 / 0.115; 2 rows W1A2 0.119 / 0.080 / 0.072, W2A2 0.211 / 0.163 / 0.140;
    # at 4 rows mixed (W1A2 0.155 / 0.187 / 0.194), so wider outputs keep lut_tile's.
    lut_narrow_oc_vectors: int = 4
    # Pack a conv's NCHW codes into bit-planes with the output columns as one vector (the
    # 64 channel bits outside): measured on the suite convs alone, conv56 1.2-1.5x faster,
    # conv28 1.3x slower. A tuning choice (both variants are design spaces), off by default.
    vector_pack: bool = False
    # A parallel conv splits its output rows between the cores (each reads the inputs, or
    # lookup tables, of its own rows and writes whole rows) unless its packed weights exceed
    # this, then its output-channel blocks (each core reads half the weights once). Measured
    # (chained suite convs, one Zen 4 with 1 MiB L2 per core, 2 threads, min of 7 alternated
    # rounds, ms, blocks first -> rows first): x86:haswell lookups W1A1 conv56 0.231 -> 0.164,
    # conv28 0.143 -> 0.110, conv14 0.125 -> 0.105, conv7 (0.59 MB of weights) 0.113 ->
    # 0.105; W2A2 conv56 0.450 -> 0.407, conv28 0.374 -> 0.342, conv14 0.264 -> 0.242, but
    # conv7 (1.2 MB) 0.301 -> 0.338. On one thread and on x86:znver4 popcounts within 5 %.
    rows_first_max_weight_bytes: int = 1 << 20
    # Below this many xor-popcounts a layer runs on one core (parallel_threshold: x86 code
    # for several threads parallelizes smaller layers than code for one).
    min_parallel_popcounts: int = 1 << 20


#: Outputs at most this wide take ``lut_narrow_oc_vectors`` weight vectors per tile.
LUT_NARROW_WIDTH = 2

#: ``min_parallel_popcounts`` of code that runs on several threads. Measured on the shipped
#: CNVs, 2 threads of a quiet 2-core Zen 4 (both threads' probe at 2.0x one's), min of 7
#: alternated rounds: 1 << 15 against 1 << 20 took CNV_2W2A from 0.210 to 0.138 ms and
#: CNV_1W1A from 0.084 to 0.073 ms; haswell code 0.181 -> 0.179 and 0.127 -> 0.102 ms.
#: 1 << 13 measured the same as 1 << 15.
MULTI_THREAD_MIN_PARALLEL_POPCOUNTS = 1 << 15


def parallel_threshold(threads: int) -> int:
    """``min_parallel_popcounts`` of code for ``threads`` threads. For one, small layers stay
    serial: a parallel loop run on one thread still costs (CNV_1W1A 0.084 -> 0.091 ms on a
    Zen 4, haswell code 0.127 -> 0.147 ms, with the multi-thread threshold)."""
    return MULTI_THREAD_MIN_PARALLEL_POPCOUNTS if threads > 1 \
        else ScheduleConfig.min_parallel_popcounts


#: The values of ``unroll_max_step`` that tuning explores (512 was dropped: never faster on
#: the suite, up to 1.8x slower on conv7 W2A2, and slow to build).
UNROLL_STEPS = (0, 16, 64)

#: Convs with at least this many branches (M·K) use the plain integer kernel on the CPUs
#: (``Layout.integer_min_branches``): measured on the 8-bit first conv of CNV_2W2A (W6A8,
#: 48 branches, im2col): 0.156 ms bit-serial. 17: an int32 multiply-add per 16 lanes beats
#: 17+ popcounts per 64.
INTEGER_MIN_BRANCHES = 17
