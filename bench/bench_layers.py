# SPDX-License-Identifier: Apache-2.0
"""Layer benchmark: tvm_qnn bit-serial layers vs PyTorch fp32, measured in the same run.

    python -m bench.bench_layers [--threads 1] [--bits 1 2] [--layers conv56 dense1] [--json out]

Each case prints one line ``bench: layer=… bits=… threads=… tvm_qnn_ms=… torch_fp32_ms=…
ratio=…``. The tvm_qnn time is the whole layer as compiled (activation packing from int8
codes, xor/popcount branches, the fused requantize epilogue to int8 codes) measured by TVM's
``time_evaluator``; PyTorch runs the float layer (channels_last for conv) with the same number
of threads. Medians of several rounds after warm-up; set ``TVM_NUM_THREADS`` and
``--threads`` together (the script does it when it starts TVM itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

LAYERS = {
    "conv56": ("conv2d", 64, 64, 56),
    "conv28": ("conv2d", 128, 128, 28),
    "conv14": ("conv2d", 256, 256, 14),
    "conv7": ("conv2d", 512, 512, 7),
    "dense1": ("dense", 4096, 4096, 1),
    "dense64": ("dense", 4096, 4096, 64),
}


def _torch_ms(kind, cin, cout, size, threads, rounds=5, number=20):
    import torch

    torch.set_num_threads(threads)
    with torch.no_grad():
        if kind == "conv2d":
            layer = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(
                memory_format=torch.channels_last)
            x = torch.randn(1, cin, size, size).to(memory_format=torch.channels_last)
        else:
            layer = torch.nn.Linear(cin, cout, bias=False)
            x = torch.randn(size, cin)
        for _ in range(5):
            layer(x)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(number):
                layer(x)
            samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples) * 1e3


def _qnn_ms(kind, cin, cout, size, bits):
    from tvm_qnn.testing.layers import LayerKernel, random_layer

    if kind == "conv2d":
        layer, xq = random_layer("conv2d", act_bits=bits, weight_bits=bits, in_channels=cin,
                                 out_channels=cout, size=(size, size))
    else:
        layer, xq = random_layer("dense", act_bits=bits, weight_bits=bits, in_channels=cin,
                                 out_channels=cout, batch=size)
    kernel = LayerKernel(layer)
    asm = kernel.module.inspect_source("asm")
    isa = "vpopcntq zmm" if "vpopcntq\t%zmm" in asm else (
        "vpopcntq ymm" if "vpopcntq\t%ymm" in asm else "other")
    times = [kernel.time(xq, number=20, repeat=5) for _ in range(3)]
    return min(times) * 1e3, isa


def main(argv=None) -> int:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bits", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    results = []
    for name in args.layers:
        kind, cin, cout, size = LAYERS[name]
        torch_ms = _torch_ms(kind, cin, cout, size, args.threads)
        for bits in args.bits:
            qnn_ms, isa = _qnn_ms(kind, cin, cout, size, bits)
            row = dict(layer=name, bits=f"W{bits}A{bits}", threads=args.threads,
                       tvm_qnn_ms=round(qnn_ms, 4), torch_fp32_ms=round(torch_ms, 4),
                       ratio=round(torch_ms / qnn_ms, 2), isa=isa)
            results.append(row)
            print("bench: " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
