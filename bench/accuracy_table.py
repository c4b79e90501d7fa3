# SPDX-License-Identifier: Apache-2.0
"""The accuracy table: CNV on Fashion-MNIST at fp32, W4A4, W3A3, W2A2, W1A2, W1A1.

    python -m bench.accuracy_table [--work-dir work_dirs/table] [--scale 1.0]

Each quantized model starts from the trained one before it (fp32 → W4A4 → W3A3 → W2A2 → W1A2
→ W1A1, the paper's high-bit → low-bit initialisation), trains for its number of epochs, and is
then compiled by tvm_qnn for this x86 CPU and run over the whole test set: the table gives
PyTorch's accuracy, the compiled model's accuracy, and how many of the 10 000 test logits were
bit-identical. Every run checkpoints each epoch; re-running the command resumes where it
stopped. Writes ``<work-dir>/table.json`` and ``<work-dir>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# (precision, epochs, initialised from)
SCHEDULE = [("fp32", 6, None), ("w4a4", 3, "fp32"), ("w3a3", 3, "w4a4"), ("w2a2", 4, "w3a3"),
            ("w1a2", 4, "w2a2"), ("w1a1", 5, "w1a2")]


def _row_md(r, fp32_acc):
    delta = "" if r["precision"] == "fp32" else f"{r['test_accuracy'] - fp32_acc:+.2f}"
    compiled = f"{r['compiled_accuracy']:.2f}" if "compiled_accuracy" in r else "-"
    exact = r.get("compiled_bitexact", "-")
    return (f"| {r['model']} | {r['epochs']} | {r['test_accuracy']:.2f} | {delta} | {compiled} "
            f"| {exact} |")


def main(argv=None) -> int:
    """Train (or resume) the whole schedule and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/table")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every epoch count")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    from tvm_qnn.train import build_parser, train

    work = Path(args.work_dir)
    results = []
    for precision, epochs, parent in SCHEDULE:
        out = work / precision
        done = out / "result.json"
        if done.exists():
            results.append(json.loads(done.read_text()))
            print(f"table: {precision} done before ({results[-1]['test_accuracy']:.2f}%)",
                  flush=True)
            continue
        run_args = ["--precision", precision, "--epochs", str(max(1, round(epochs * args.scale))),
                    "--out", str(out), "--threads", str(args.threads)]
        if parent:
            run_args += ["--init-from", str(work / parent / "final.pt"), "--compile"]
        results.append(train(build_parser().parse_args(run_args)))
    fp32_acc = results[0]["test_accuracy"]
    lines = ["| model | epochs | PyTorch test accuracy (%) | vs fp32 | tvm_qnn compiled "
             "accuracy (%) | bit-identical logits |", "|---|---:|---:|---:|---:|---:|"]
    lines += [_row_md(r, fp32_acc) for r in results]
    (work / "table.md").write_text("\n".join(lines) + "\n")
    tmp = work / "table.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, work / "table.json")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
