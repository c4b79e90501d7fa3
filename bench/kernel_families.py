# SPDX-License-Identifier: Apache-2.0
"""Popcounts, table lookups or byte dot products: each x86 class's kernel families on the
suite convs.

    python -m bench.kernel_families [--mcpu haswell skylake-avx512 cascadelake znver4]
        [--layers conv56 conv28 conv14 conv7] [--bits 1x2 1x3 2x2 2x3 3x3 4x4]
        [--dot-tiles 8x1x2 2x1x2] [--json out.json]

The measurement behind each class's ``Layout.dot8_min_branches`` (:mod:`tvm_qnn.target.x86.dot8`)
and ``Layout.lut_max_weight_bits`` (:mod:`tvm_qnn.target.x86.lut`): for every ``--mcpu`` (x86
CPUs whose code runs on this host) and case, the bit-serial kernel and, on the classes that
have it, the table-lookup kernel as inside a chain of them
(:class:`~tvm_qnn.testing.layers.ChainedLayerKernel`), and the int8-dot kernel as it runs in a
network (it reads the previous layer's NCHW codes), each checked against the integer
reference and timed on one pinned core. ``--dot-tiles`` times the dot kernel with other
register tiles (``columns x rows x weight vectors``; default: the class's own). One
``families:`` line per case; ``dot_x`` (``lut_x``) > 1 means the dot (lookup) kernel is
faster than popcounts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from .bench_layers import parse_bits

CONVS = ("conv56", "conv28", "conv14", "conv7")


def _dot_target(mcpu: str, tile):
    """``x86:<mcpu>`` with the dot kernel for every layer it fits (and ``tile``, if given)."""
    from dataclasses import replace

    from tvm_qnn.target import X86Target
    from tvm_qnn.target.cpu import ScheduleConfig
    from tvm_qnn.target.x86.dot8 import DOT8_TILES

    base = X86Target(mcpu)
    if base.dot_family is None:
        raise SystemExit(f"--mcpu {mcpu}: no byte dot-product instructions (AVX2 or later)")
    config = ScheduleConfig(dot8_tile=tile or DOT8_TILES[base.dot_family])
    return X86Target(mcpu, schedule_config=config,
                     layout=replace(base.layout, dot8_min_branches=1))


def measure(mcpu: str, layer_name: str, bits: tuple[int, int], tiles, rounds: int = 3) -> dict:
    """One case: both families checked and timed (ms, the best of ``rounds`` medians)."""
    import numpy as np

    from tvm_qnn.target import resolve_target
    from tvm_qnn.testing.layers import ChainedLayerKernel, LayerKernel
    from tvm_qnn.testing.suite import suite_layer
    from tvm_qnn.topi.layer import reference_output
    from tvm_qnn.topi.layout import FORCED_LUT_WEIGHT_BITS

    wbits, abits = bits
    layer, xq = suite_layer(layer_name, wbits, abits)
    expected = reference_output(layer, xq)
    row = dict(mcpu=mcpu, layer=layer_name, bits=f"W{wbits}A{abits}")
    popcount = ChainedLayerKernel(layer, target=f"x86:{mcpu}")
    row["popcount_ms"] = 1e3 * min(popcount.time(xq, number=10, repeat=5) for _ in range(rounds))
    lut = None
    if "lut" in resolve_target(f"x86:{mcpu}").kernel_families:  # the classes that have it
        lut = ChainedLayerKernel(layer, target=f"x86:{mcpu}",
                                 lut_max_weight_bits=FORCED_LUT_WEIGHT_BITS)
    if lut is not None and lut.plan.kernel == "lut":
        if not np.array_equal(lut(xq), expected):
            raise AssertionError(f"{mcpu} {layer_name} W{wbits}A{abits}: lut not exact")
        row["lut_ms"] = 1e3 * min(lut.time(xq, number=10, repeat=5) for _ in range(rounds))
        row["lut_x"] = row["popcount_ms"] / row["lut_ms"]
    for tile in tiles:
        dot = LayerKernel(layer, target=_dot_target(mcpu, tile), dot8_min_branches=1)
        if dot.plan.kernel != "int8-dot":
            row["dot_ms"] = None  # the layer does not fit the dot kernel (int16 sums)
            break
        if not np.array_equal(dot(xq), expected):
            raise AssertionError(f"{mcpu} {layer_name} W{wbits}A{abits}: int8-dot not exact")
        key = "dot_ms" if tile is None else "dot_ms_" + "x".join(map(str, tile))
        row[key] = 1e3 * min(dot.time(xq, number=10, repeat=5) for _ in range(rounds))
    dots = [v for k, v in row.items() if k.startswith("dot_ms") and v]
    row["dot_x"] = row["popcount_ms"] / min(dots) if dots else None
    return row


def main(argv=None) -> int:
    """Print (and with ``--json`` write) one line per (class, layer, bits)."""
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_families",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--mcpu", nargs="+",
                        default=["haswell", "skylake-avx512", "cascadelake", "znver4"])
    parser.add_argument("--layers", nargs="+", choices=CONVS, default=list(CONVS))
    parser.add_argument("--bits", type=parse_bits, nargs="+",
                        default=[(1, 2), (1, 3), (2, 2), (2, 3), (3, 3), (4, 4)])
    parser.add_argument("--dot-tiles", nargs="+", default=[], metavar="CxRxV")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    tiles = [None] + [tuple(int(v) for v in t.split("x")) for t in args.dot_tiles]
    os.environ["TVM_NUM_THREADS"] = "1"
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    from tvm_qnn.target import resolve_target

    rows = []
    for mcpu in args.mcpu:
        why = resolve_target(f"x86:{mcpu}").why_not_here()
        if why:
            print(f"families: mcpu={mcpu} skipped ({why})", flush=True)
            continue
        for name in args.layers:
            for bits in args.bits:
                row = measure(mcpu, name, bits, tiles)
                rows.append(row)
                print("families: " + " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in row.items()), flush=True)
    if args.json:
        from .bench_layers import _cpu_name

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(machine=dict(cpu=_cpu_name(), host_mcpu=resolve_target("x86").mcpu,
                                        python=platform.python_version(), pinned_cpu=cpu),
                           rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
