# SPDX-License-Identifier: Apache-2.0
"""Modelled ARM speed of the bit-serial layers (llvm-mca), labelled as a model, never a time.

    python -m bench.arm_model [--boards rasp4b rasp5 rasp3b-64] [--layers conv56 dense1]
    tvm-qnn bench --target arm_cpu:rasp4b            (the same, from the command line)

For each board and layer at W1A1 / W2A2 the layer is compiled for the board, the innermost
loop with the most vector ``cnt`` is cut from the assembly and run through
``llvm-mca-19 -mcpu=<core>``; cycles per iteration × the iterations the layer needs (its
128-bit xor-popcounts ÷ the loop's ``cnt`` count) estimate the branch computation, which is
divided into the layer's MACs at the board's clock. Packing and the epilogue are outside the
hot loop and not in the estimate: it models the kernel, not the layer.

Two bounds, both from llvm-mca's model of the core:

- ``cnt`` bound: the 128-bit ``cnt`` alone at its issue rate. No xor-popcount kernel can
  reach it on a core whose ``eor``, ``cnt`` and vector ``add`` share the same two ASIMD pipes
  (cortex-a72/a76: at most a third of it);
- xpa bound (xor-popcount-accumulate): ``eor`` + ``cnt`` + byte ``add`` per 128 bits, the
  least work any kernel does per 128 binary MACs.

The fp32 column is the same model of a scheduled fp32 conv (TensorIR: 16 output channels as
four q registers, 4 positions unrolled, ``fmla`` by element) compiled by TVM for the same
core, next to the fp32 ``fmla`` issue bound (the best any fp32 kernel could do). For the
dense layer the fp32 model is compute only: its 64 MB of weights would make it slower still.
The cortex-a76 (Raspberry Pi 5) is modelled with LLVM's Neoverse-N1 scheduling model (the N1
is the server version of the A76 core); LLVM 19 has no A76 model of its own.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import tvm
from tvm import s_tir, te

from tvm_qnn.target import BOARDS, ArmTarget
from tvm_qnn.target.arm.mca import CNT as _CNT
from tvm_qnn.target.arm.mca import hot_loop as _hot_loop
from tvm_qnn.target.arm.mca import mca_cycles as _mca
from tvm_qnn.testing.suite import LAYER_SUITE, suite_layer

CLOCK_GHZ = {name: b.clock_ghz for name, b in BOARDS.items() if b.arch == "aarch64"}
LAYERS = {k: v for k, v in LAYER_SUITE.items() if k != "dense64"}
_FMLA = re.compile(r"\bfmla\s+v\d+\.4s")


def _throughput(ops: list[str], mcpu: str) -> float:
    """Groups of ``ops`` per cycle on ``mcpu`` at the issue bound (llvm-mca resources)."""
    body = []
    for k in range(24):
        for op in ops:
            body.append("\t" + op.format(d=k % 20, s=20 + k % 8))
    return 24 / _mca("\n".join(body), mcpu, resources_only=True)


def _macs(layer_name: str) -> int:
    kind, cin, cout, size = LAYERS[layer_name]
    return cout * cin * 9 * size * size if kind == "conv2d" else cout * cin * size


def _fp32_kernel(layer_name: str, oc_inner: int = 16, tile: int = 4) -> tvm.tirx.PrimFunc:
    """A scheduled fp32 conv3x3 / dense PrimFunc of the layer (the fp32 peer of the model)."""
    kind, cin, cout, size = LAYERS[layer_name]
    if kind == "conv2d":
        data = te.placeholder((1, cin, size + 2, size + 2), "float32", "data")  # pre-padded
        w = te.placeholder((cout // oc_inner, cin, 3, 3, oc_inner), "float32", "w")
        ic, ky, kx = (te.reduce_axis((0, e), name) for e, name in
                      ((cin, "ic"), (3, "ky"), (3, "kx")))
        acc = te.compute((1, cout // oc_inner, size, size, oc_inner),
                         lambda n, ob, y, x, oi: te.sum(data[n, ic, y + ky, x + kx]
                                                        * w[ob, ic, ky, kx, oi], axis=[ic, ky, kx]),
                         name="acc")
        out = te.compute((1, cout, size, size),
                         lambda n, c, y, x: acc[n, c // oc_inner, y, x, c % oc_inner], name="out")
    else:
        data = te.placeholder((size, cin), "float32", "data")
        w = te.placeholder((cout // oc_inner, cin, oc_inner), "float32", "w")
        k = te.reduce_axis((0, cin), "k")
        acc = te.compute((size, cout // oc_inner, oc_inner),
                         lambda r, ob, oi: te.sum(data[r, k] * w[ob, k, oi], axis=k), name="acc")
        out = te.compute((size, cout), lambda r, c: acc[r, c // oc_inner, c % oc_inner],
                         name="out")
    sch = s_tir.Schedule(te.create_prim_func([data, w, out]))
    block, accb = sch.get_sblock("out"), sch.get_sblock("acc")
    loops = sch.get_loops(block)
    cb, ci = sch.split(loops[1], [None, oc_inner])
    if kind == "conv2d":
        xo, xi = sch.split(loops[3], [None, tile])
        sch.reorder(loops[0], cb, loops[2], xo, xi, ci)
        at, n_red = xo, 3
    else:
        sch.reorder(cb, loops[0], ci)
        at, xi, n_red = loops[0], None, 1
    sch.compute_at(accb, at, preserve_unit_loops=True)
    sch.set_scope(accb, 0, "local")
    inner = sch.get_loops(accb)
    red, spatial = inner[-n_red:], inner[-n_red - 2:-n_red]
    sch.reorder(*red, *spatial)
    sch.vectorize(spatial[-1])
    sch.unroll(spatial[-2])
    sch.vectorize(ci)
    if xi is not None:
        sch.unroll(xi)
    sch.decompose_reduction(accb, red[0])
    return sch.mod["main"]


def fp32_estimate(board: str, layer_name: str) -> dict:
    """llvm-mca model of the scheduled fp32 layer on ``board``, and the fmla bound."""
    target = ArmTarget(board)
    mcpu, clock = target.board.mcpu, CLOCK_GHZ[board]
    module = tvm.compile(_fp32_kernel(layer_name), target.tvm_target).mod
    loop = _hot_loop(module.inspect_source("asm"), _FMLA)
    fmla = len(_FMLA.findall(loop))
    cycles = _macs(layer_name) / 4 / fmla * _mca(loop, mcpu)
    bound = _macs(layer_name) / 4 / _throughput(["fmla v{d}.4s, v{s}.4s, v{s}.4s"], mcpu)
    return dict(fp32_model_ms=round(cycles / clock / 1e6, 4),
                fp32_bound_ms=round(bound / clock / 1e6, 4))


def estimate(board: str, layer_name: str, bits: int) -> dict:
    """The model of one layer at W{bits}A{bits} on ``board``."""
    from tvm_qnn.testing.layers import LayerKernel

    layer, _ = suite_layer(layer_name, bits, bits)
    macs = _macs(layer_name)
    target = ArmTarget(board)
    mcpu, clock = target.board.mcpu, CLOCK_GHZ[board]
    kernel = LayerKernel(layer, target=target)
    loop = _hot_loop(kernel.module.inspect_source("asm"))
    cnt_per_iter = len(_CNT.findall(loop))
    cycles_per_iter = _mca(loop, mcpu)
    vector_ops = macs * bits * bits / 128  # one 128-bit xor + cnt per 128 binary MACs
    cycles = vector_ops / cnt_per_iter * cycles_per_iter
    cnt_bound = vector_ops / _throughput(["cnt v{d}.16b, v{s}.16b"], mcpu)
    xpa_bound = vector_ops / _throughput(["eor v{d}.16b, v{s}.16b, v{s}.16b",
                                          "cnt v{d}.16b, v{d}.16b",
                                          "add v{s}.16b, v{s}.16b, v{d}.16b"], mcpu)
    return dict(board=board, mcpu=mcpu, layer=layer_name, bits=f"W{bits}A{bits}",
                model_ms=round(cycles / clock / 1e6, 4),
                model_gops=round(2 * macs / (cycles / clock), 1),
                cnt_bound_ms=round(cnt_bound / clock / 1e6, 4),
                of_cnt_bound=round(cnt_bound / cycles, 2),
                of_xpa_bound=round(xpa_bound / cycles, 2),
                loop_cnt=cnt_per_iter, loop_cycles=round(cycles_per_iter, 2))


def main(argv=None) -> int:
    """Print one ``model:`` line per case (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boards", nargs="+", default=["rasp4b", "rasp5", "rasp3b-64"])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = []
    for board in args.boards:
        if board not in CLOCK_GHZ:
            raise SystemExit(f"--boards {board}: modelled boards are {sorted(CLOCK_GHZ)}")
        for layer in args.layers:
            fp32 = fp32_estimate(board, layer)
            for bits in args.bits:
                row = estimate(board, layer, bits) | fp32
                row["x_fp32_model"] = round(row["fp32_model_ms"] / row["model_ms"], 1)
                row["x_fp32_bound"] = round(row["fp32_bound_ms"] / row["model_ms"], 1)
                rows.append(row)
                print("model (llvm-mca estimate, not a measurement): "
                      + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
