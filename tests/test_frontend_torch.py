# SPDX-License-Identifier: Apache-2.0
"""torch.export programs of tvm_qnn.nn models compile directly (no ONNX), bit-exactly."""

import numpy as np
import pytest
import torch
from torch import nn

import tvm_qnn
from tvm_qnn.nn import freeze, quantize_model


def _model(pow2, bn):
    torch.manual_seed(1)
    layers = [nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
              nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)]
    if bn:
        layers.insert(1, nn.BatchNorm2d(16))
    q = quantize_model(nn.Sequential(*layers), 2, 2, pow2=pow2, bn=bn)
    q.train()
    with torch.no_grad():
        for seed in range(2):
            q(torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(seed)))
    return q.eval()


@pytest.mark.parametrize("pow2,bn", [(True, False), (False, True)])
def test_module_and_exported_program_compile_bit_exact(pow2, bn):
    q = _model(pow2, bn)
    x = torch.randn(1, 1, 12, 12)
    art = tvm_qnn.compile(q, example_inputs=(x,))
    assert [r["bitserial"] for r in art.layers] == [True] * 4
    with torch.no_grad():
        program = torch.export.export(freeze(q), (x,))
    art2 = tvm_qnn.compile(program)
    for seed in range(3):
        xs = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = q(xs).numpy()
            assert np.array_equal(freeze(q)(xs).numpy(), want)
        np.testing.assert_array_equal(art.run(xs.numpy()), want)
        np.testing.assert_array_equal(art2.run(xs.numpy()), want)


def test_the_quantizer_after_the_max_pool_moves_before_it():
    # conv → ReLU → MaxPool → the next conv's fake quant: the pool then takes codes, and the
    # conv before it writes them (PoolQuantizedCodes).
    from tvm_qnn.frontend.torch import load_torch

    mod = load_torch(_model(True, False), (torch.randn(1, 1, 12, 12),))
    pools = [b.value for blk in mod["main"].body.blocks for b in blk.bindings
             if getattr(getattr(b.value, "op", None), "name", "") == "relax.nn.max_pool2d"]
    assert [str(p.args[0].ty.dtype) for p in pools] == ["uint8"]


def test_module_needs_example_inputs():
    with pytest.raises(tvm_qnn.UnsupportedModelError, match="example_inputs"):
        tvm_qnn.compile(_model(True, False))
