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

from .runtime.threads import default_threads
from .runtime.timing import measure_seconds, time_call

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def _shipped(name: str) -> str:
    return os.path.join(MODELS, f"{name}.onnx")


def _thread_counts() -> list[int]:
    """1 and the default (the physical cores, or ``TVM_NUM_THREADS``): each engine is timed
    at both and its better time shown, since on a tiny model one thread can win."""
    return sorted({1, default_threads()})


def _best(seconds_at) -> tuple[float, int]:
    """(seconds, threads) of the fastest of ``seconds_at(threads)`` over the thread counts."""
    times = {t: seconds_at(t) for t in _thread_counts()}
    threads = min(times, key=times.get)
    return times[threads], threads


def _ort_seconds(model, feeds: dict, threads: int) -> float:
    """onnxruntime (graph optimizations on) on ``threads`` threads, :func:`time_call`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return time_call(lambda: sess.run(None, feeds))


def _artifact_seconds(art, x, threads: int) -> float:
    """A compiled model on ``threads`` threads: the same protocol as :func:`time_call`,
    each sample TVM's time evaluator (no Python overhead)."""
    estimate = art.benchmark(x, number=1, repeat=1, threads=threads)
    return measure_seconds(lambda number, repeat: art.benchmark(
        x, number=number, repeat=repeat, threads=threads), estimate)


def _timing_line() -> str:
    counts = " and ".join(str(t) for t in _thread_counts())
    return (f"batch 1, the better of {counts} thread(s) per engine "
            "(min over 3 rounds of 5-sample medians)")


def trained_demo(images: int | None) -> int:
    """Compile the shipped trained CNVs and run the Fashion-MNIST test set through them."""
    import onnxruntime as ort
    import tvm

    import tvm_qnn
    from tvm_qnn.data import load_fashion_mnist

    x, y = load_fashion_mnist("test", unit=True)  # the shipped models take [0, 1] images
    if images:
        x, y = x[:images], y[:images]
    print(f"tvm_qnn demo: trained CNVs on Fashion-MNIST ({len(x)} test images)\n"
          f"{_timing_line()}\n")
    fsess = ort.InferenceSession(_shipped("CNV_FP32"), providers=["CPUExecutionProvider"])
    name = fsess.get_inputs()[0].name
    f_acc = 100.0 * np.mean([np.argmax(fsess.run(None, {name: x[i:i + 1]})[0]) == y[i]
                             for i in range(len(x))])
    t_ort, n_ort = _best(lambda t: _ort_seconds(_shipped("CNV_FP32"), {name: x[:1]}, t))
    float_art = tvm_qnn.runtime.Artifact(
        tvm.compile(tvm.relax.frontend.onnx.from_onnx(
            __import__("onnx").load(_shipped("CNV_FP32"))),
            tvm.target.Target({"kind": "llvm", "num-cores": default_threads()})),
        [tvm_qnn.runtime.TensorInfo(name, (1, 1, 28, 28), "float32")], "llvm float", [])
    t_tvm, n_tvm = _best(lambda t: _artifact_seconds(float_art, x[:1], t))
    print(f"CNV_FP32  accuracy {f_acc:6.2f} %   onnxruntime fp32 {t_ort * 1e3:7.3f} ms "
          f"({n_ort}t)   TVM fp32 (default pipeline) {t_tvm * 1e3:7.3f} ms ({n_tvm}t)")
    for model in ("CNV_2W2A", "CNV_1W1A"):
        art = tvm_qnn.compile(_shipped(model), target="x86")
        correct = sum(int(np.argmax(art.run(x[i:i + 1])) == y[i]) for i in range(len(x)))
        acc = 100.0 * correct / len(x)
        t, n = _best(lambda threads, art=art: _artifact_seconds(art, x[:1], threads))
        print(f"{model}  accuracy {acc:6.2f} % ({acc - f_acc:+.2f})   tvm_qnn bit-serial "
              f"{t * 1e3:7.3f} ms ({n}t)   x{t_ort / t:.2f} vs onnxruntime fp32, "
              f"x{t_tvm / t:.2f} vs TVM fp32")
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
    t_qnn, n_qnn = _best(lambda t: _artifact_seconds(art, x, t))
    t_ort, n_ort = _best(lambda t: _ort_seconds(fmodel.SerializeToString(), feeds, t))
    t_ort_q, n_ort_q = _best(lambda t: _ort_seconds(model.SerializeToString(), feeds, t))
    float_mod = tvm.relax.frontend.onnx.from_onnx(fmodel)
    tvm_float = tvm_qnn.runtime.Artifact(
        tvm.compile(float_mod, tvm.target.Target({"kind": "llvm",
                                                  "num-cores": default_threads()})),
        art.inputs, "llvm float", [])
    t_tvm, n_tvm = _best(lambda t: _artifact_seconds(tvm_float, x, t))
    print(f"latency, {_timing_line()}:")
    print(f"  tvm_qnn bit-serial          {t_qnn * 1e3:8.3f} ms ({n_qnn}t)")
    print(f"  onnxruntime float (fp32)    {t_ort * 1e3:8.3f} ms ({n_ort}t)   "
          f"x{t_ort / t_qnn:.2f}")
    print(f"  onnxruntime QCDQ model      {t_ort_q * 1e3:8.3f} ms ({n_ort_q}t)   "
          f"x{t_ort_q / t_qnn:.2f}")
    print(f"  TVM float, default pipeline {t_tvm * 1e3:8.3f} ms ({n_tvm}t)   "
          f"x{t_tvm / t_qnn:.2f}")
    print(f"\ndemo: bitexact={exact}/{args.images} tvm_qnn_ms={t_qnn * 1e3:.3f} "
          f"ort_fp32_ms={t_ort * 1e3:.3f} tvm_fp32_ms={t_tvm * 1e3:.3f}")
    return 0 if exact == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
