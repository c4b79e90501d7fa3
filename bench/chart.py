# SPDX-License-Identifier: Apache-2.0
"""The bench's chart (``python -m bench --png out.png``): tvm_qnn's speed-up over each peer per
layer, one panel per (bits, threads)."""

from __future__ import annotations

import os

PEERS_PLOTTED = (("x_fp32", "vs PyTorch fp32"), ("torch_int8_ms", "vs PyTorch int8"),
                 ("ort_int8_ms", "vs onnxruntime int8"),
                 ("of_roofline", "fraction of popcount roofline"))


def plot(rows: list[dict], path: str) -> bool:
    """Bars per layer of tvm_qnn's speed-up over each peer (and its fraction of the roofline),
    one panel per (bits, threads). Returns False (with a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install matplotlib): no PNG written",
              flush=True)
        return False
    panels = sorted({(r["bits"], r["threads"]) for r in rows}, key=lambda p: (p[1], p[0]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, (bits, threads) in zip(axes[:, 0], panels, strict=True):
        sel = [r for r in rows if r["bits"] == bits and r["threads"] == threads]
        width = 0.8 / len(PEERS_PLOTTED)
        for j, (key, label) in enumerate(PEERS_PLOTTED):
            values = [r[key] if key.startswith(("x_", "of_")) else r[key] / r["tvm_qnn_ms"]
                      for r in sel]
            xs = [i + (j - (len(PEERS_PLOTTED) - 1) / 2) * width for i in range(len(sel))]
            bars = ax.bar(xs, values, width, label=label)
            ax.bar_label(bars, fmt="%.2g", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        top = max(max(r["x_fp32"], r["of_roofline"]) for r in sel)
        ax.set_ylim(top=max(top, 1.0) * 8)  # room for the legend above the bars
        ax.set_xticks(range(len(sel)), [r["layer"] for r in sel])
        ax.set_ylabel("speed-up (x)")
        ax.set_title(f"tvm_qnn {bits}, {threads} thread(s): speed-up over peers "
                     f"(isa {sel[0]['isa']})", fontsize=10)
        ax.legend(fontsize=8, ncol=len(PEERS_PLOTTED))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


__all__ = ["PEERS_PLOTTED", "plot"]
