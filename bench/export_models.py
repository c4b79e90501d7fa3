# SPDX-License-Identifier: Apache-2.0
"""Export the trained CNVs of the accuracy table as the models shipped in ``tvm_qnn/models``.

    python -m bench.export_models [--work-dir work_dirs/table] [--precisions fp32 w2a2 w1a1]

Each model takes float32 ``N×1×28×28`` images scaled to [0, 1] (an ``InputScale`` maps them to
the [-1, 1] the network was trained on) and returns 10 logits. Before writing, the script
checks on Fashion-MNIST test images that ``tvm_qnn.compile`` of the file returns exactly the
PyTorch model's logits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tvm_qnn.data import load_fashion_mnist
from tvm_qnn.nn import InputScale, export_onnx
from tvm_qnn.nn.models import build, model_name

SHIPPED = Path(__file__).resolve().parent.parent / "tvm_qnn" / "models"


def main(argv=None) -> int:
    """Export (and check) the requested precisions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/table")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "w2a2", "w1a1"])
    parser.add_argument("--check-images", type=int, default=200)
    args = parser.parse_args(argv)
    import tvm_qnn

    x_test, _ = load_fashion_mnist("test")
    images = torch.from_numpy((x_test[:args.check_images] + 1.0) / 2.0)  # back to [0, 1]
    SHIPPED.mkdir(exist_ok=True)
    for precision in args.precisions:
        state = torch.load(Path(args.work_dir) / precision / "final.pt", map_location="cpu",
                           weights_only=False)["model"]
        net = build(precision)
        net.load_state_dict(state)
        model = nn.Sequential(InputScale(2.0, -1.0), *net).eval()
        path = SHIPPED / f"{model_name(precision)}.onnx"
        tmp = path.with_suffix(".onnx.tmp")
        export_onnx(model, images[:1], str(tmp))
        art = tvm_qnn.compile(str(tmp))
        with torch.no_grad():
            same = sum(int(np.array_equal(art.run(images[i:i + 1].numpy()),
                                          model(images[i:i + 1]).numpy()))
                       for i in range(len(images)))
        if precision != "fp32" and same != len(images):
            os.unlink(tmp)
            raise SystemExit(f"{path.name}: compiled logits differ from PyTorch on "
                             f"{len(images) - same}/{len(images)} images")
        os.replace(tmp, path)
        print(f"export: {path.name} {path.stat().st_size} bytes, compiled == PyTorch on "
              f"{same}/{len(images)} images", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
