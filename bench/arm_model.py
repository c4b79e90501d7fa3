# SPDX-License-Identifier: Apache-2.0
"""Modelled ARM speed of the bit-serial layers (llvm-mca), labelled as a model, never a time.

    python -m bench.arm_model [--boards rasp4b rasp5 rasp3b-64] [--layers conv56 conv7 dense1]

For each board and layer at W1A1 / W2A2 the layer is compiled for the board, the hot loop (the
basic block with the most vector ``cnt``) is cut from the assembly and run through
``llvm-mca-19 -mcpu=<core>``; cycles per iteration × the iterations the layer needs (its
128-bit xor-popcounts ÷ the loop's ``cnt`` count) estimate the branch computation, which is
divided into the layer's MACs at the board's clock. The ``cnt`` issue bound is the same count
divided by the ``cnt`` throughput llvm-mca reports for the core. Packing and the epilogue are
not in the estimate (they are outside the hot loop): it is the kernel, not the layer.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys

from tvm_qnn.target import ArmTarget

CLOCK_GHZ = {"rasp4b": 1.5, "rasp5": 2.4, "rasp3b-64": 1.2, "neoverse-n1": 2.6}
LAYERS = {"conv56": ("conv2d", 64, 64, 56), "conv28": ("conv2d", 128, 128, 28),
          "conv14": ("conv2d", 256, 256, 14), "conv7": ("conv2d", 512, 512, 7),
          "dense1": ("dense", 4096, 4096, 1)}
_CNT = re.compile(r"\bcnt\s+v\d+\.16b")


def _mca(asm: str, mcpu: str) -> float:
    """Cycles per iteration of ``asm`` (a loop body) on ``mcpu`` according to llvm-mca."""
    tool = shutil.which("llvm-mca-19") or shutil.which("llvm-mca")
    if tool is None:
        raise SystemExit("llvm-mca not found: apt-get install llvm-19")
    out = subprocess.run([tool, "-mtriple=aarch64-linux-gnu", f"-mcpu={mcpu}",
                          "-iterations=200"], input=asm, capture_output=True, text=True,
                         check=True).stdout
    cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1))
    return cycles / 200


def _hot_loop(asm: str) -> str:
    """The innermost loop with the most vector ``cnt``: from its label to its back-edge."""
    loops = []
    for label in re.finditer(r"^(\.LBB\d+_\d+):", asm, re.M):
        back = re.search(rf"^\s+b(?:\.\w+)?\s+{re.escape(label.group(1))}\s*$",
                         asm[label.end():], re.M)
        body = asm[label.end():label.end() + back.end()] if back else ""
        if body and not re.search(r"^\.LBB\d+_\d+:", body, re.M):  # innermost only
            loops.append(body)
    body = max(loops, key=lambda b: len(_CNT.findall(b)))
    # Keep instructions only: no labels or assembler directives.
    return "\n".join(line for line in body.splitlines()
                     if line.startswith("\t") and not line.lstrip().startswith("."))


def estimate(board: str, layer_name: str, bits: int) -> dict:
    """The model of one layer at W{bits}A{bits} on ``board``."""
    from tvm_qnn.testing.layers import LayerKernel, random_layer

    kind, cin, cout, size = LAYERS[layer_name]
    if kind == "conv2d":
        layer, _ = random_layer("conv2d", act_bits=bits, weight_bits=bits, in_channels=cin,
                                out_channels=cout, size=(size, size))
        macs = cout * cin * 9 * size * size
    else:
        layer, _ = random_layer("dense", act_bits=bits, weight_bits=bits, in_channels=cin,
                                out_channels=cout, batch=size)
        macs = cout * cin * size
    target = ArmTarget(board)
    kernel = LayerKernel(layer, target=target)
    loop = _hot_loop(kernel.module.inspect_source("asm"))
    cnt_per_iter = len(_CNT.findall(loop))
    cycles_per_iter = _mca(loop, target.board.mcpu)
    vector_ops = macs * bits * bits / 128  # one 128-bit xor + cnt per 128 binary MACs
    cycles = vector_ops / cnt_per_iter * cycles_per_iter
    bound = vector_ops / _cnt_throughput(target.board.mcpu)
    clock = CLOCK_GHZ[board]
    return dict(board=board, mcpu=target.board.mcpu, layer=layer_name, bits=f"W{bits}A{bits}",
                model_ms=round(cycles / clock / 1e6, 4),
                model_gops=round(2 * macs / (cycles / clock), 1),
                cnt_bound_ms=round(bound / clock / 1e6, 4),
                fraction_of_bound=round(bound / cycles, 2), loop_cnt=cnt_per_iter,
                loop_cycles=round(cycles_per_iter, 2))


def _cnt_throughput(mcpu: str) -> float:
    """Vector ``cnt`` per cycle on ``mcpu`` (llvm-mca on independent cnts)."""
    body = "\n".join(f"\tcnt\tv{i % 24}.16b, v{24 + i % 8}.16b" for i in range(48))
    return 48 / _mca(body, mcpu)


def main(argv=None) -> int:
    """Print one ``model:`` line per case (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boards", nargs="+", default=["rasp4b", "rasp5", "rasp3b-64"])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = []
    for board in args.boards:
        for layer in args.layers:
            for bits in args.bits:
                row = estimate(board, layer, bits)
                rows.append(row)
                print("model (llvm-mca estimate, not a measurement): "
                      + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
