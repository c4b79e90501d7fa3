# SPDX-License-Identifier: Apache-2.0
"""Brevitas' own example networks, exported as a Brevitas user exports them, cached on disk.

The field's canonical low-bit networks are Brevitas' ``bnn_pynq`` family (FINN's CNV, LFC, SFC,
TFC at W1A1 / W1A2 / W2A2) and its 4-bit ResNet-18 and MobileNet-v1 examples
(:data:`ALL_MODELS`). :func:`brevitas_export` builds one with random weights, gives its
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
_QONNX_QUANTIZERS = ("Quant", "BipolarQuant", "Trunc")
CALIBRATION_PASSES = 4
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class BrevitasModel:
    """One network of ``brevitas_examples``: its factory, input shape and precision."""

    name: str  # the factory in ``zoo``, e.g. "cnv_1w1a"
    input_shape: tuple[int, ...]
    weight_bits: int
    act_bits: int
    zoo: str = "brevitas_examples.bnn_pynq.models"
    # torch.export (the default exporter from torch 2.9) fails on the ResNet and MobileNet
    # examples; TorchScript tracing exports them.
    dynamo: bool = True

    def build(self):
        """The network with its own random initialisation (no download)."""
        return getattr(importlib.import_module(self.zoo), self.name)(pretrained=False)


def _bnn_pynq(name: str, shape: tuple[int, ...]) -> BrevitasModel:
    w, a = name.split("_")[1].rstrip("a").split("w")
    return BrevitasModel(name, shape, int(w), int(a))


BNN_PYNQ = tuple(
    [_bnn_pynq(f"cnv_{p}", (1, 3, 32, 32)) for p in ("1w1a", "1w2a", "2w2a")]
    + [_bnn_pynq(f"lfc_{p}", (1, 1, 28, 28)) for p in ("1w1a", "1w2a")]
    + [_bnn_pynq(f"{f}_{p}", (1, 1, 28, 28)) for f in ("sfc", "tfc")
       for p in ("1w1a", "1w2a", "2w2a")])

# The 4-bit examples: a CIFAR ResNet-18, the ImageNet MobileNet-v1 (its average pool is
# 7x7 on the last 7x7 map: 224x224 inputs only) and ProxylessNAS-Mobile 1.4 (the same).
FOUR_BIT = (
    BrevitasModel("resnet18_4w4a", (1, 3, 32, 32), 4, 4, dynamo=False),
    BrevitasModel("quant_mobilenet_v1_4b", (1, 3, 224, 224), 4, 4,
                  zoo="brevitas_examples.imagenet_classification.models", dynamo=False),
    BrevitasModel("quant_proxylessnas_mobile14_4b", (1, 3, 224, 224), 4, 4,
                  zoo="brevitas_examples.imagenet_classification.models", dynamo=False),
)
ALL_MODELS = BNN_PYNQ + FOUR_BIT


def export_formats(model: BrevitasModel) -> tuple[str, ...]:
    """The formats Brevitas exports ``model`` to: ``qonnx`` always, ``qcdq`` unless a
    quantizer has 1 bit ("Binary quant not supported")."""
    return ("qonnx",) if 1 in (model.weight_bits, model.act_bits) else ("qonnx", "qcdq")


def _versions() -> str:
    from importlib.metadata import version

    return "|".join(version(p) for p in ("brevitas", "onnx", "qonnx", "torch"))


def _cache_key(model: BrevitasModel, fmt: str) -> str:
    zoo = importlib.import_module(model.zoo)
    # The factory, the module of the class it builds and every module of the zoo's package
    # folder: what defines the network.
    folder = os.path.dirname(inspect.getfile(zoo))
    sources = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))
    source = inspect.getsource(getattr(zoo, model.name)) + "".join(
        open(f, encoding="utf-8").read() for f in sources) + inspect.getsource(
        calibrated) + inspect.getsource(_export)
    text = (f"{model}|{fmt}|{_versions()}|{SEED}|{CALIBRATION_PASSES}|{CALIBRATION_BATCH}|"
            f"{source}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibrated(model: BrevitasModel):
    """The network with random weights and BatchNorm statistics of random inputs."""
    import torch

    torch.manual_seed(SEED)
    net = model.build()
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

    net = calibrated(model)
    example = torch.rand(model.input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "model.onnx")
        if fmt == "qonnx":
            from qonnx.util.cleanup import cleanup

            export_qonnx(net, example, export_path=raw, dynamo=model.dynamo)
            cleanup(raw, out_file=raw)
        elif fmt == "qcdq":
            export_onnx_qcdq(net, example, export_path=raw, dynamo=model.dynamo)
        else:
            raise ValueError(f"format {fmt!r} (qonnx or qcdq)")
        proto = onnx.load(raw)  # pulls in external data: the cached file stands alone
    partial = f"{path}.tmp-{os.getpid()}"
    onnx.save(proto, partial)
    os.replace(partial, path)


def brevitas_export(model: BrevitasModel | str, fmt: str = "qonnx",
                    cache_dir: str | None = None) -> str:
    """Path of ``model`` (a :class:`BrevitasModel` or the name of one in ``ALL_MODELS``)
    exported to ``fmt``
    (``qonnx`` or ``qcdq``), exporting it on a cache miss. Needs ``brevitas``, ``qonnx`` and
    ``onnxoptimizer``."""
    if isinstance(model, str):
        model = next((m for m in ALL_MODELS if m.name == model), None) or _unknown(model)
    if fmt not in export_formats(model):
        raise ValueError(f"Brevitas does not export {model.name} to {fmt} "
                         f"(formats: {', '.join(export_formats(model))})")
    folder = os.path.join(cache_dir or knobs.cache_dir(), "brevitas")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{model.name}.{fmt}.{_cache_key(model, fmt)}.onnx")
    if not os.path.exists(path):
        _export(model, fmt, path)
    return path


def float_model(model):
    """The QONNX ``model`` in plain float ONNX — constant quantizers folded (qonnx's
    ``FoldConstants``), the others removed: the network a float runtime runs, e.g. the
    onnxruntime fp32 peer of the benchmarks."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(model).transform(InferShapes()).transform(FoldConstants())
    graph = wrapped.model.graph
    for k, node in enumerate(list(graph.node)):
        if node.domain and node.op_type in _QONNX_QUANTIZERS:
            graph.node.remove(node)
            graph.node.insert(k, helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                                  name=node.name))
    out = wrapped.transform(RemoveUnusedTensors()).model  # the quantizers' parameters
    del out.opset_import[:]
    out.opset_import.extend([helper.make_opsetid("", 14)])
    return out


def _unknown(name: str):
    raise ValueError(f"unknown Brevitas model {name!r}; known: "
                     + ", ".join(m.name for m in ALL_MODELS))
