# SPDX-License-Identifier: Apache-2.0
"""Import PyTorch models through ``torch.export`` (no ONNX on the way).

A ``tvm_qnn.nn`` model is frozen first (:func:`tvm_qnn.nn.freeze`: every quantization number a
constant computed by PyTorch), exported with ``torch.export``, imported with TVM's
``from_exported_program``, constant-folded, and its fake-quantization arithmetic canonicalized
(:class:`~tvm_qnn.transform.CanonicalizeFakeQuant`) so that the bit-serial rewrite finds its
layers; a quantizer after a max pool moves before it
(:class:`~tvm_qnn.transform.PoolQuantizedCodes`). A ready ``torch.export.ExportedProgram`` is
accepted as well (export a frozen model).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..errors import UnsupportedModelError


def load_torch(model, example_inputs=None) -> tvm.IRModule:
    """Import an ``nn.Module`` (with ``example_inputs``) or a ``torch.export.ExportedProgram``."""
    import torch

    from ..nn.freeze import freeze
    from ..transform.canonicalize_fake_quant import CanonicalizeFakeQuant
    from ..transform.graph_facts import rewrite_calls
    from ..transform.pool_quantized_codes import POOL_RULES

    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise UnsupportedModelError("compiling an nn.Module needs example_inputs=(x,) "
                                        "(its shapes are compiled statically)")
        if not isinstance(example_inputs, (tuple, list)):
            example_inputs = (example_inputs,)
        with torch.no_grad():
            program = torch.export.export(freeze(model), tuple(example_inputs))
    elif isinstance(model, torch.export.ExportedProgram):
        program = model
    else:
        raise UnsupportedModelError(f"not a torch model: {type(model).__name__}")
    from tvm.relax.frontend.torch import from_exported_program

    try:
        mod = from_exported_program(program, keep_params_as_input=False,
                                    unwrap_unit_return_tuple=True)
    except Exception as err:  # noqa: BLE001 - TVM converter errors are untyped
        raise UnsupportedModelError(f"could not import the exported program: {err}") from err
    mod = relax.transform.FoldConstant()(mod)
    mod = CanonicalizeFakeQuant()(mod)
    # A quantizer after a max pool (conv → ReLU → MaxPool → next layer's fake quant) moves
    # before it, as for ONNX; the bindings are canonicalized first, so that the quantizer
    # reads the pooling itself rather than a field of a tuple holding it.
    return rewrite_calls(relax.transform.CanonicalizeBindings()(mod), POOL_RULES)
