# SPDX-License-Identifier: Apache-2.0
"""The README's main job (``make demo``): compile the shipped quantized CNNs, measure them.

Default: the trained ``CNV_2W2A`` and ``CNV_1W1A`` of ``tvm_qnn/models`` (Fashion-MNIST,
trained with ``tvm_qnn.nn``) are compiled for this CPU and run over the 10 000 test images;
their accuracy and latency are printed next to the float model ``CNV_FP32`` run by
onnxruntime and by TVM. Without the shipped models or the data set (``make data``), or with
``--random``, a CNN with **random weights** is built instead, to check exactness and speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .runtime.timing import time_call

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def _shipped(name: str) -> str:
    return os.path.join(MODELS, f"{name}.onnx")


def trained_demo(images: int | None) -> int:
    """Compile the shipped trained CNVs and run the Fashion-MNIST test set through them."""
    import onnxruntime as ort
    import tvm

    import tvm_qnn
    from tvm_qnn.data import load_fashion_mnist

    threads = int(os.environ.get("TVM_NUM_THREADS", "0")) or len(os.sched_getaffinity(0))
    x, y = load_fashion_mnist("test", unit=True)  # the shipped models take [0, 1] images
    if images:
        x, y = x[:images], y[:images]
    print(f"tvm_qnn demo: trained CNVs on Fashion-MNIST ({len(x)} test images), batch 1, "
          f"{threads} thread(s)\n")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    fsess = ort.InferenceSession(_shipped("CNV_FP32"), so, providers=["CPUExecutionProvider"])
    name = fsess.get_inputs()[0].name
    f_acc = 100.0 * np.mean([np.argmax(fsess.run(None, {name: x[i:i + 1]})[0]) == y[i]
                             for i in range(len(x))])
    t_ort = time_call(lambda: fsess.run(None, {name: x[:1]}))
    float_art = tvm_qnn.runtime.Artifact(
        tvm.compile(tvm.relax.frontend.onnx.from_onnx(
            __import__("onnx").load(_shipped("CNV_FP32"))),
            tvm.target.Target({"kind": "llvm", "num-cores": threads})),
        [tvm_qnn.runtime.TensorInfo(name, (1, 1, 28, 28), "float32")], "llvm float", [])
    t_tvm = float_art.benchmark(x[:1], number=10, repeat=3)
    print(f"CNV_FP32  accuracy {f_acc:6.2f} %   onnxruntime fp32 {t_ort * 1e3:7.3f} ms   "
          f"TVM fp32 (default pipeline) {t_tvm * 1e3:7.3f} ms")
    for model in ("CNV_2W2A", "CNV_1W1A"):
        art = tvm_qnn.compile(_shipped(model), target="x86")
        correct = sum(int(np.argmax(art.run(x[i:i + 1])) == y[i]) for i in range(len(x)))
        acc = 100.0 * correct / len(x)
        t = art.benchmark(x[:1], number=50, repeat=5)
        print(f"{model}  accuracy {acc:6.2f} % ({acc - f_acc:+.2f})   tvm_qnn bit-serial "
              f"{t * 1e3:7.3f} ms   x{t_ort / t:.2f} vs onnxruntime fp32, x{t_tvm / t:.2f} vs "
              f"TVM fp32")
        print(f"demo: model={model} accuracy={acc:.2f} float_accuracy={f_acc:.2f} "
              f"tvm_qnn_ms={t * 1e3:.3f} ort_fp32_ms={t_ort * 1e3:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (1 if the compiled model is not bit-exact)."""
    parser = argparse.ArgumentParser(prog="python -m tvm_qnn.demo", description=__doc__)
    parser.add_argument("--random", action="store_true",
                        help="the random-weight CNN instead of the shipped trained models")
    parser.add_argument("--bits", type=int, default=2, help="random CNN: bits of middle layers")
    parser.add_argument("--images", type=int, default=None,
                        help="test images (trained) / random inputs (default 32) to use")
    args = parser.parse_args(argv)
    if not args.random and all(os.path.exists(_shipped(m))
                               for m in ("CNV_FP32", "CNV_2W2A", "CNV_1W1A")):
        from tvm_qnn.data import fashion_mnist_dir
        from tvm_qnn.errors import TvmQnnError

        try:
            fashion_mnist_dir()
            return trained_demo(args.images)
        except TvmQnnError as err:
            print(f"({err}; running the random-weight demo instead)\n")
    args.images = args.images or 32

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
    t_ort = time_call(lambda: fast.run(None, feeds))
    qsess = ort.InferenceSession(model.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
    t_ort_q = time_call(lambda: qsess.run(None, feeds))
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
