# SPDX-License-Identifier: Apache-2.0
"""The README's main job (``make demo``): compile a quantized CNN, check it, time it.

Until a trained model ships (the training issue), the CNN is built here with **random
weights**: the numbers show that the compiled bit-serial code equals onnxruntime bit for bit
and how fast it runs, not how accurate a trained network is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def _median_seconds(fn, rounds: int = 5, number: int = 20) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (1 if the compiled model is not bit-exact)."""
    parser = argparse.ArgumentParser(prog="python -m tvm_qnn.demo", description=__doc__)
    parser.add_argument("--bits", type=int, default=2, help="bits of the middle layers")
    parser.add_argument("--images", type=int, default=32, help="random inputs to compare")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import tvm

    import tvm_qnn
    from tvm_qnn.testing.float_model import float_twin
    from tvm_qnn.testing.onnx_models import make_cnn_model, random_input, run_onnxruntime

    threads = int(os.environ.get("TVM_NUM_THREADS", "0")) or len(os.sched_getaffinity(0))
    print(f"tvm_qnn demo: a small CNN, W{args.bits}A{args.bits} middle layers, 8-bit first and "
          "last layers (QCDQ ONNX, as Brevitas exports it).")
    print("NOTE: the weights are RANDOM (no trained model ships yet): this checks exactness "
          "and speed, not accuracy.\n")
    model = make_cnn_model("qcdq", bits=args.bits)
    print(tvm_qnn.summary(model), "\n")

    start = time.perf_counter()
    art = tvm_qnn.compile(model, target="x86")
    print(f"compiled for {art.target} in {time.perf_counter() - start:.1f} s\n")

    name = art.inputs[0].name
    exact = agree = 0
    fmodel = float_twin(model)
    fsess = ort.InferenceSession(fmodel.SerializeToString(), providers=["CPUExecutionProvider"])
    for i in range(args.images):
        feeds = random_input(model, seed=i)
        got = art.run(feeds[name])
        want = run_onnxruntime(model, feeds)[0]
        exact += int(np.array_equal(got, want))
        fout = fsess.run(None, feeds)[0]
        agree += int(np.argmax(got) == np.argmax(fout))
    print(f"bit-exact vs onnxruntime (graph optimizations off): {exact}/{args.images} inputs")
    print(f"top-1 agreement with the float model:               {agree}/{args.images} inputs "
          "(random weights)\n")

    feeds = random_input(model, seed=0)
    x = feeds[name]
    t_qnn = art.benchmark(x, number=50, repeat=5)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    fast = ort.InferenceSession(fmodel.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    t_ort = _median_seconds(lambda: fast.run(None, feeds))
    qsess = ort.InferenceSession(model.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
    t_ort_q = _median_seconds(lambda: qsess.run(None, feeds))
    float_mod = tvm.relax.frontend.onnx.from_onnx(fmodel)
    tvm_float = tvm_qnn.runtime.Artifact(
        tvm.compile(float_mod, tvm.target.Target({"kind": "llvm", "num-cores": threads})),
        art.inputs, "llvm float", [])
    t_tvm = tvm_float.benchmark(x, number=10, repeat=3)
    print(f"latency, batch 1, {threads} thread(s), median:")
    print(f"  tvm_qnn bit-serial          {t_qnn * 1e3:8.3f} ms")
    print(f"  onnxruntime float (fp32)    {t_ort * 1e3:8.3f} ms   x{t_ort / t_qnn:.2f}")
    print(f"  onnxruntime QCDQ model      {t_ort_q * 1e3:8.3f} ms   x{t_ort_q / t_qnn:.2f}")
    print(f"  TVM float, default pipeline {t_tvm * 1e3:8.3f} ms   x{t_tvm / t_qnn:.2f}")
    print(f"\ndemo: bitexact={exact}/{args.images} tvm_qnn_ms={t_qnn * 1e3:.3f} "
          f"ort_fp32_ms={t_ort * 1e3:.3f} tvm_fp32_ms={t_tvm * 1e3:.3f}")
    return 0 if exact == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
