# SPDX-License-Identifier: Apache-2.0
"""Train a CNV at a given precision, resumably; check the compiled model against PyTorch.

    python -m tvm_qnn.train --precision w2a2 --epochs 6 --out work_dirs/cnv_w2a2 \\
        [--init-from work_dirs/cnv_w3a3/final.pt] [--dataset fashion-mnist|digits] [--compile]

Every epoch ends with an atomic checkpoint (``last.pt``: model, optimizer, epoch,
random states); running the same command again resumes from it (``--restart`` starts over).
``--init-from`` starts a quantized model from a trained float or higher-bit one (the paper's
high-bit → low-bit schedule). ``--compile`` exports the trained model to QCDQ ONNX, compiles it
with tvm_qnn for this x86 CPU and runs the whole test set through it: the compiled logits must
equal PyTorch's bit for bit, and the compiled accuracy is reported next to PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cli_args import existing_file, precision_spec
from .data import load_dataset
from .knobs import work_dir
from .nn import export_onnx, init_from_higher_bit
from .nn.models import DEFAULT_CNV_CHANNELS, build, model_name, parse_precision


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _learning_rate(peak: float, step: int, total: int) -> float:
    """Linear warm-up over the first 10 % of the steps, then cosine decay to zero.

    A function of the step (not a stateful scheduler), so a resumed run picks it up exactly.
    """
    warm = max(1, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _batches(x, y, batch_size, generator=None):
    order = torch.randperm(len(x), generator=generator) if generator is not None else \
        torch.arange(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


@torch.no_grad()
def evaluate(model, x, y, batch_size=500) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in _batches(x, y,
                                                                                 batch_size))
    return 100.0 * correct / len(x)


def _initial_model(args, channels, num_classes, in_channels):
    model = build(args.precision, channels, num_classes, in_channels)
    if not args.init_from:
        return model
    state = torch.load(args.init_from, map_location="cpu", weights_only=False)["model"]
    if parse_precision(args.precision) is not None and not any(".weight_quant." in k
                                                               for k in state):
        # From a float model: quantize its trained weights and BatchNorms.
        from .nn import quantize_model
        from .nn.models import cnv

        float_model = cnv(channels, num_classes, in_channels)
        float_model.load_state_dict(state)
        bits = parse_precision(args.precision)
        return quantize_model(float_model, bits[0], bits[1])
    return init_from_higher_bit(model, state)


def compile_check(model, x_test, y_test, out: Path, limit: int | None = None) -> dict:
    """Export, compile for x86, and compare the compiled logits with PyTorch's on the test set."""
    import tvm_qnn

    onnx_path = out / "model.onnx"
    export_onnx(model.eval(), x_test[:1], str(onnx_path))
    art = tvm_qnn.compile(str(onnx_path), target="x86")
    n = len(x_test) if limit is None else min(limit, len(x_test))
    same = correct_compiled = 0
    with torch.no_grad():
        for i in tqdm(range(n), desc="compiled model", leave=False, mininterval=1.0):
            want = model(x_test[i:i + 1]).numpy()
            got = art.run(x_test[i:i + 1].numpy())
            same += int(np.array_equal(got, want))
            correct_compiled += int(got.argmax() == int(y_test[i]))
    return {"compiled_bitexact": f"{same}/{n}", "compiled_accuracy": 100.0 * correct_compiled / n,
            "bitserial_layers": sum(1 for r in art.layers if r["bitserial"]),
            "layers": len(art.layers), "onnx": str(onnx_path)}


def train(args) -> dict:
    """Run (or resume) one training run; returns the final metrics."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = (torch.from_numpy(a) for a in load_dataset(args.dataset, "train"))
    x_test, y_test = (torch.from_numpy(a) for a in load_dataset(args.dataset, "test"))
    if args.limit_train:
        x_train, y_train = x_train[:args.limit_train], y_train[:args.limit_train]
    channels = tuple(int(c) for c in args.channels.split(","))
    num_classes = int(y_train.max()) + 1
    model = _initial_model(args, channels, num_classes, x_train.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    per_epoch = math.ceil(len(x_train) / args.batch_size)
    total_steps = args.epochs * per_epoch
    start_epoch, history = 0, []
    last = out / "last.pt"
    if last.exists() and not args.restart:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resuming {out} at epoch {start_epoch + 1}/{args.epochs}", flush=True)
    elif parse_precision(args.precision) is not None or args.init_from:
        # Initialise the quantizer steps on one batch before the optimizer moves anything.
        model.train()
        with torch.no_grad():
            model(x_train[:args.batch_size])
    for epoch in range(start_epoch, args.epochs):
        model.train()
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        total, seen, begin = 0.0, 0, time.time()
        bar = tqdm(_batches(x_train, y_train, args.batch_size, gen),
                   total=math.ceil(len(x_train) / args.batch_size),
                   desc=f"{model_name(args.precision)} epoch {epoch + 1}/{args.epochs}",
                   mininterval=2.0)
        for step, (xb, yb) in enumerate(bar, start=epoch * per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(args.lr, step, total_steps)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(xb)
            seen += len(xb)
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        acc = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch + 1, "loss": total / seen, "test_accuracy": acc,
                        "seconds": round(time.time() - begin, 1)})
        print(f"train: {model_name(args.precision)} epoch={epoch + 1} loss={total / seen:.4f} "
              f"test_accuracy={acc:.2f}", flush=True)
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "epoch": epoch + 1,
                      "history": history, "torch_rng": torch.get_rng_state(),
                      "args": vars(args)}, last)
    result = {"model": model_name(args.precision), "precision": args.precision,
              "dataset": args.dataset, "epochs": args.epochs,
              "test_accuracy": evaluate(model, x_test, y_test), "history": history}
    _atomic_save({"model": model.state_dict(), "args": vars(args)}, out / "final.pt")
    if args.compile and parse_precision(args.precision) is not None:
        result.update(compile_check(model, x_test, y_test, out, args.compile_limit))
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "result.json")
    print("result: " + json.dumps({k: v for k, v in result.items() if k != "history"}),
          flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m tvm_qnn.train`` / ``tvm-qnn train``."""
    p = argparse.ArgumentParser(prog="tvm-qnn train", description=__doc__.split("\n")[0])
    p.add_argument("--precision", default="w2a2", type=precision_spec,
                   help="fp32 or wKaM (e.g. w2a2, w1a1)")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--channels", default=",".join(map(str, DEFAULT_CNV_CHANNELS)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default=None, help="run folder (default: work dir/cnv_<precision>)")
    p.add_argument("--init-from", default=None, type=existing_file,
                   help="checkpoint of a float/higher-bit model")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    p.add_argument("--compile", action="store_true",
                   help="compile with tvm_qnn and check it against PyTorch on the test set")
    p.add_argument("--compile-limit", type=int, default=None,
                   help="test images for --compile (default: all)")
    p.add_argument("--limit-train", type=int, default=None, help="use the first N images")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 if the compiled model is not bit-exact)."""
    args = build_parser().parse_args(argv)
    args.out = args.out or str(Path(work_dir()) / f"cnv_{args.precision.lower()}")
    result = train(args)
    exact = result.get("compiled_bitexact")
    if exact is not None:
        same, total = (int(v) for v in exact.split("/"))
        return 0 if same == total else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
