# SPDX-License-Identifier: Apache-2.0
"""Brevitas' own example networks, exported as a Brevitas user exports them, cached on disk.

The field's canonical low-bit networks are Brevitas' ``bnn_pynq`` family (FINN's CNV, LFC, SFC,
TFC at W1A1 / W1A2 / W2A2). :func:`brevitas_export` builds one with random weights, gives its
BatchNorms the statistics of a few passes over random inputs, and exports it with Brevitas'
own exporter to QONNX (plus qonnx's ``cleanup``, as FINN does) or to QCDQ ONNX. Brevitas
refuses QCDQ for 1-bit quantizers, so 1-bit models exist as QONNX only
(:func:`export_formats`).

Exports are deterministic and cached under ``<TVM_QNN_CACHE_DIR>/brevitas`` by a hash of
everything that defines them (the model's source, the versions of the exporters, the seed), so
a test session exports each model once and a warm cache not at all.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import tempfile
from dataclasses import dataclass

from .. import knobs

SEED = 0
CALIBRATION_PASSES = 4
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class BrevitasModel:
    """One ``brevitas_examples.bnn_pynq`` network: its factory name and input shape."""

    name: str  # e.g. "cnv_1w1a"
    input_shape: tuple[int, ...]

    @property
    def weight_bits(self) -> int:
        """Bits of the weights, from the name (``cnv_1w2a`` → 1)."""
        return int(self.name.split("_")[1].split("w")[0])

    @property
    def act_bits(self) -> int:
        """Bits of the activations, from the name (``cnv_1w2a`` → 2)."""
        return int(self.name.split("w")[-1].rstrip("a"))


BNN_PYNQ = tuple(
    [BrevitasModel(f"cnv_{p}", (1, 3, 32, 32)) for p in ("1w1a", "1w2a", "2w2a")]
    + [BrevitasModel(f"lfc_{p}", (1, 1, 28, 28)) for p in ("1w1a", "1w2a")]
    + [BrevitasModel(f"{f}_{p}", (1, 1, 28, 28)) for f in ("sfc", "tfc")
       for p in ("1w1a", "1w2a", "2w2a")])


def export_formats(model: BrevitasModel) -> tuple[str, ...]:
    """The formats Brevitas exports ``model`` to: ``qonnx`` always, ``qcdq`` unless a
    quantizer has 1 bit ("Binary quant not supported")."""
    return ("qonnx",) if 1 in (model.weight_bits, model.act_bits) else ("qonnx", "qcdq")


def _versions() -> str:
    from importlib.metadata import version

    return "|".join(version(p) for p in ("brevitas", "onnx", "qonnx", "torch"))


def _cache_key(model: BrevitasModel, fmt: str) -> str:
    zoo = importlib.import_module("brevitas_examples.bnn_pynq.models")
    factory = getattr(zoo, model.name)
    impl = inspect.getmodule(zoo.CNV if model.name.startswith("cnv") else zoo.FC)
    source = inspect.getsource(factory) + inspect.getsource(impl) + inspect.getsource(
        inspect.getmodule(_cache_key))
    text = f"{model}|{fmt}|{_versions()}|{SEED}|{source}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _calibrated(model: BrevitasModel):
    """The network with random weights and BatchNorm statistics of random inputs."""
    import torch

    zoo = importlib.import_module("brevitas_examples.bnn_pynq.models")
    torch.manual_seed(SEED)
    net = getattr(zoo, model.name)(pretrained=False)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average of the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_PASSES):
            net(torch.rand(CALIBRATION_BATCH, *model.input_shape[1:]))
    return net.eval()


def _export(model: BrevitasModel, fmt: str, path: str) -> None:
    import onnx
    import torch
    from brevitas.export import export_onnx_qcdq, export_qonnx

    net = _calibrated(model)
    example = torch.rand(model.input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        if fmt == "qonnx":
            from qonnx.util.cleanup import cleanup

            export_qonnx(net, example, export_path=raw)
            cleanup(raw, out_file=raw)
        elif fmt == "qcdq":
            export_onnx_qcdq(net, example, export_path=raw)
        else:
            raise ValueError(f"format {fmt!r} (qonnx or qcdq)")
        proto = onnx.load(raw)  # pulls in external data: the cached file stands alone
    partial = f"{path}.tmp-{os.getpid()}"
    onnx.save(proto, partial)
    os.replace(partial, path)


def brevitas_export(model: BrevitasModel | str, fmt: str = "qonnx",
                    cache_dir: str | None = None) -> str:
    """Path of ``model`` (a :class:`BrevitasModel` or a ``BNN_PYNQ`` name) exported to ``fmt``
    (``qonnx`` or ``qcdq``), exporting it on a cache miss. Needs ``brevitas``, ``qonnx`` and
    ``onnxoptimizer``."""
    if isinstance(model, str):
        model = next((m for m in BNN_PYNQ if m.name == model), None) or _unknown(model)
    if fmt not in export_formats(model):
        raise ValueError(f"Brevitas does not export {model.name} to {fmt} "
                         f"(formats: {', '.join(export_formats(model))})")
    folder = os.path.join(cache_dir or knobs.cache_dir(), "brevitas")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{model.name}.{fmt}.{_cache_key(model, fmt)}.onnx")
    if not os.path.exists(path):
        _export(model, fmt, path)
    return path


def _unknown(name: str):
    raise ValueError(f"unknown Brevitas model {name!r}; known: "
                     + ", ".join(m.name for m in BNN_PYNQ))
