# SPDX-License-Identifier: Apache-2.0
"""Brevitas' own networks end to end: ``python -m bench --layers --brevitas [NAMES]``.

Each network of :mod:`tvm_qnn.testing.brevitas_models` (random weights, exported by Brevitas
to QONNX) is compiled by :func:`tvm_qnn.compile` and timed next to, in the same run:

* ``ort_fp32_ms``: onnxruntime on the same network in float — the QONNX weight quantizers
  folded into float initializers, the activation quantizers removed
  (:func:`tvm_qnn.testing.brevitas_models.float_model`);
* ``ort_int8_ms``: onnxruntime on that float network quantized to 8-bit QDQ by
  ``onnxruntime.quantization.quantize_static`` (per-channel weights, calibrated on random
  inputs), fused by full optimization;
* ``roofline_ms``: ``sum(W·A × MACs)`` of the bit-serial layers over the popcount probe's rate
  (:mod:`bench.roofline`): the time of those layers alone at the popcount limit.

One ``bench: brevitas=…`` line per network and thread count; ``x_ort_fp32`` and
``x_ort_int8`` are tvm_qnn's speed-ups (> 1: faster).
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from . import peers

DEFAULT = ("cnv_1w1a", "cnv_2w2a", "lfc_1w1a", "tfc_2w2a", "resnet18_4w4a",
           "quant_mobilenet_v1_4b")
def int8_model(fp32_path: str, out_path: str, shape, samples: int = 8) -> None:
    """``fp32_path`` quantized to int8 QDQ by onnxruntime, calibrated on random inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    name = onnx.load(fp32_path).graph.input[0].name
    rng = np.random.default_rng(0)

    class _Random(CalibrationDataReader):
        def __init__(self):
            self.left = samples

        def get_next(self):
            self.left -= 1
            return {name: rng.random(shape, dtype=np.float32)} if self.left >= 0 else None

    logging.disable(logging.WARNING)  # its advice to pre-process, once per tensor
    try:
        quantize_static(fp32_path, out_path, _Random(), quant_format=QuantFormat.QDQ,
                        per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def bench_brevitas(names, threads, timing, rates, report, target="x86") -> list[dict]:
    """Time each Brevitas network (module docstring); ``rates``: the probe's bit-MAC/s per
    thread count; ``report(row)`` is called as each row is measured."""
    import onnx

    import tvm_qnn
    from tvm_qnn.testing.brevitas_models import ALL_MODELS, brevitas_export, float_model

    specs = {m.name: m for m in ALL_MODELS}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            spec = specs[name]
            model = onnx.load(brevitas_export(spec, "qonnx"))
            fp32_path, int8_path = (os.path.join(tmp, f"{name}.{k}.onnx") for k in ("f", "q"))
            onnx.save(float_model(model), fp32_path)
            int8_model(fp32_path, int8_path, spec.input_shape)
            art = tvm_qnn.compile(model, target=target)
            x = np.random.default_rng(1).random(spec.input_shape, dtype=np.float32)
            # Every quantized layer at the popcount limit, whichever kernel it got.
            bit_macs = sum(r["macs"] * r["act_bits"] * r["weight_bits"] for r in art.layers
                           if r["bitserial"])
            for n in threads:
                peers.pin(n)
                est = art.benchmark(x, number=1, repeat=1, threads=n)
                qnn_ms = peers.measure_ms(
                    lambda number, repeat, a=art, x=x, n=n: a.benchmark(
                        x, number=number, repeat=repeat, threads=n), est, timing)
                row = dict(brevitas=name, threads=n, tvm_qnn_ms=qnn_ms)
                for peer, path in (("ort_fp32_ms", fp32_path), ("ort_int8_ms", int8_path)):
                    sess, _ = peers.ort_session(path, n)
                    row[peer] = peers.ort_time_ms(sess, {sess.get_inputs()[0].name: x}, timing)
                row.update(x_ort_fp32=row["ort_fp32_ms"] / qnn_ms,
                           x_ort_int8=row["ort_int8_ms"] / qnn_ms,
                           roofline_ms=bit_macs / rates[n] * 1e3,
                           bitserial_layers=f"{sum(r['bitserial'] for r in art.layers)}"
                                            f"/{len(art.layers)}")
                rows.append(row)
                report(row)
    return rows
