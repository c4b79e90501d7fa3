# SPDX-License-Identifier: Apache-2.0
"""Fuzzing ``compile`` with hostile input: mutations, and a worker process that survives none.

The contract checked: a :class:`~tvm_qnn.errors.TvmQnnError` or a correct answer, never a crash.
A case that could crash the process runs in a long-lived worker (``python -m
tvm_qnn.testing.fuzz``) driven by :class:`FuzzWorker`: it reads one JSON case a line on stdin
and answers on its stdout (its own prints go to stderr), so a signal, an abort or a hang ends
only the worker — the client sees which step it died in and starts another.

Cases (each names an ``out`` prefix the worker writes ``.npz`` arrays to):

* ``{"kind": "onnx", "model": path, "base": path}``: compile the model file at ``path`` for
  this host (no tuning), run it on random feeds for its inputs (the base model's when it has
  none usable), then run onnxruntime (graph optimizations off) on the same feeds;
* ``{"kind": "db", "model": path, "db": folder or None}``: compile with ``tuning_db=folder``
  and run on the base feeds (seed 0).

Answers, one JSON line each: ``{"step": "tvm", "outcome": "ok" | "error" | "exception", ...}``,
for ONNX cases then ``{"step": "ref", "outcome": "ok" | "refused", ...}``, then
``{"done": true}``. The mutations are plain functions of their parameters, so a property test
(hypothesis) draws the parameters and a failure replays from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import traceback

import numpy as np
import onnx

# -- mutations of an ONNX model ----------------------------------------------------------------

#: op types a node may be changed into (some unknown to every importer)
OP_TYPES = ("Conv", "Relu", "QuantizeLinear", "DequantizeLinear", "Clip", "Add", "MatMul",
            "Identity", "Gemm", "MaxPool", "FancyOp")
#: element types an initializer may be converted to
ELEM_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32,
              onnx.TensorProto.INT64, onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
              onnx.TensorProto.FLOAT16, onnx.TensorProto.INT16, onnx.TensorProto.BOOL)
#: values written into initializers (scales, zero-points, weights, bounds)
SPECIAL_VALUES = (0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 1e-30,
                  -1.0, 0.5, 3.0, 255.0, -129.0, 65536.0)


def _pick(seq, k: int):
    return seq[k % len(seq)] if len(seq) else None


def mutate_model(model: onnx.ModelProto, op: str, a: int, b: int, x: float) -> None:
    """Apply one mutation to ``model`` in place; ``a``, ``b`` pick what (modulo counts) and
    ``x`` is a value. ``op``: drop_node, duplicate_node, set_attribute, retype_initializer,
    reshape_initializer, set_initializer, swap_inputs, change_op, rewire_input,
    drop_initializer."""
    g = model.graph
    node, init = _pick(g.node, a), _pick(g.initializer, a)
    if op == "drop_node" and node is not None:
        g.node.remove(node)
    elif op == "duplicate_node" and node is not None:
        g.node.insert(b % (len(g.node) + 1), node)
    elif op == "set_attribute" and node is not None and node.attribute:
        attr = _pick(node.attribute, b)
        if attr.type == onnx.AttributeProto.INT:
            attr.i = int(np.clip(x, -(2**62), 2**62)) if np.isfinite(x) else -1
        elif attr.type == onnx.AttributeProto.INTS:
            del attr.ints[:]
            attr.ints.extend([int(np.clip(x, -(2**62), 2**62)) if np.isfinite(x) else 0]
                             * (b % 5))
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = x
        else:
            node.attribute.remove(attr)
    elif op == "retype_initializer" and init is not None:
        values = onnx.numpy_helper.to_array(init)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(_pick(ELEM_TYPES, b))
        with np.errstate(all="ignore"):
            new = np.nan_to_num(values.astype(np.float64)).astype(dtype)
        init.CopyFrom(onnx.numpy_helper.from_array(new, init.name))
    elif op == "reshape_initializer" and init is not None:
        values = onnx.numpy_helper.to_array(init).reshape(-1)
        shapes = [(), (0,), values.shape, (1, *values.shape), (values.size, 1)]
        shape = _pick(shapes, b)
        if shape == ():
            values = values[:1].reshape(()) if values.size else np.zeros((), values.dtype)
        elif shape == (0,):
            values = values[:0]
        init.CopyFrom(onnx.numpy_helper.from_array(values.reshape(shape), init.name))
    elif op == "set_initializer" and init is not None:
        values = onnx.numpy_helper.to_array(init).copy()
        if values.size:
            with np.errstate(all="ignore"):
                value = np.array(x).astype(values.dtype)
            if b % 2:
                values.reshape(-1)[b % values.size] = value
            else:
                values[...] = value
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    elif op == "swap_inputs" and node is not None:
        inputs = list(node.input)[::-1]
        del node.input[:]
        node.input.extend(inputs)
    elif op == "change_op" and node is not None:
        node.op_type = _pick(OP_TYPES, b)
    elif op == "rewire_input" and node is not None and node.input:
        names = [i.name for i in g.input] + [i.name for i in g.initializer] + \
            [o for n in g.node for o in n.output]
        node.input[b % len(node.input)] = _pick(names, int(abs(x)) if np.isfinite(x) else 0)
    elif op == "drop_initializer" and init is not None:
        g.initializer.remove(init)


MODEL_MUTATIONS = ("drop_node", "duplicate_node", "set_attribute", "retype_initializer",
                   "reshape_initializer", "set_initializer", "swap_inputs", "change_op",
                   "rewire_input", "drop_initializer")


# -- mutations of a tuning database file -------------------------------------------------------

DB_MUTATIONS = ("truncate", "random_bytes", "replace_line", "duplicate_line", "swap_lines",
                "empty", "delete", "edit_number")


def _numbers(value, path=()):
    """Paths of the numbers (not bools) in a JSON value."""
    if isinstance(value, list):
        for k, v in enumerate(value):
            yield from _numbers(v, (*path, k))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path


def mutate_file(path: str, op: str, a: int, b: int, data: bytes, value) -> None:
    """Apply one mutation to the file at ``path``: ``a``, ``b`` pick positions (modulo),
    ``data`` is random bytes and ``value`` a JSON value (a line, or a number)."""
    if op == "delete":
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    text = open(path, "rb").read() if os.path.exists(path) else b""  # noqa: SIM115
    lines = text.split(b"\n")
    if op == "truncate":
        text = text[:a % (len(text) + 1)]
    elif op == "random_bytes":
        text = data if b % 2 else text + data
    elif op == "empty":
        text = b""
    elif op in ("replace_line", "duplicate_line", "swap_lines", "edit_number") and text:
        i, j = a % len(lines), b % len(lines)
        if op == "replace_line":
            lines[i] = json.dumps(value).encode()
        elif op == "duplicate_line":
            lines.insert(j, lines[i])
        elif op == "swap_lines":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            try:
                parsed = json.loads(lines[i])
            except ValueError:
                parsed = None
            places = list(_numbers(parsed))
            if places and isinstance(value, (int, float)) and not isinstance(value, bool):
                place = places[b % len(places)]
                if not place:  # the line is a number
                    parsed = value
                else:
                    holder = parsed
                    for key in place[:-1]:
                        holder = holder[key]
                    holder[place[-1]] = value
                lines[i] = json.dumps(parsed).encode()
        text = b"\n".join(lines)
    with open(path, "wb") as f:
        f.write(text)


# -- the worker --------------------------------------------------------------------------------

def _feeds(model_path: str, base_path: str) -> dict:
    from .onnx_run import random_input

    for path in (model_path, base_path):
        try:
            return random_input(onnx.load(path))
        except Exception:  # noqa: BLE001, S112 - a hostile model: the next source of feeds
            continue
    return {}


def _save(out: str, outputs) -> None:
    outputs = outputs if isinstance(outputs, list) else [outputs]
    np.savez(out, *[np.asarray(o) for o in outputs])


def _tvm_step(case: dict, feeds: dict) -> dict:
    import tvm_qnn

    try:
        if case["kind"] == "onnx":
            art = tvm_qnn.compile(case["model"])
        else:
            art = tvm_qnn.compile(case["model"], tuning_db=case["db"])
        _save(case["out"] + ".tvm", art.run(feeds))
        return {"step": "tvm", "outcome": "ok"}
    except tvm_qnn.TvmQnnError as err:
        return {"step": "tvm", "outcome": "error", "type": type(err).__name__,
                "message": str(err)[:400]}
    except Exception as err:  # noqa: BLE001 - reported: the contract says never
        return {"step": "tvm", "outcome": "exception", "type": type(err).__name__,
                "message": traceback.format_exc()[-3000:]}


def _reference_step(case: dict, feeds: dict) -> dict:
    from .onnx_run import run_onnxruntime

    try:
        _save(case["out"] + ".ref", run_onnxruntime(onnx.load(case["model"]), feeds))
        return {"step": "ref", "outcome": "ok"}
    except Exception as err:  # noqa: BLE001 - onnxruntime refuses the model: nothing to check
        return {"step": "ref", "outcome": "refused", "message": str(err)[:400]}


def serve() -> None:
    """The worker loop: cases on stdin, answers on stdout (see the module docstring)."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what TVM, onnx or a warning prints goes to stderr, not into the answers
    for line in sys.stdin:
        case = json.loads(line)
        base = case.get("base") or case["model"]
        feeds = _feeds(case["model"] if case["kind"] == "onnx" else base, base)
        steps = [_tvm_step]
        if case["kind"] == "onnx":
            steps.append(_reference_step)
        for step in steps:
            answer = step(case, feeds)
            answers.write(json.dumps(answer) + "\n")
            answers.flush()
            if answer["outcome"] != "ok":
                break
        answers.write('{"done": true}\n')
        answers.flush()


# -- the client --------------------------------------------------------------------------------

class FuzzWorker:
    """Sends cases to a worker process, starting one whenever the last has died."""

    def __init__(self, log: str, timeout: float = 120):
        self.log, self.timeout = log, timeout
        self.proc: subprocess.Popen | None = None
        self.started = 0
        self._pending = b""

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "TVM_QNN_SCHEDULES": "off", "TVM_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tvm_qnn.testing.fuzz"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env)
        self.started += 1
        self._pending = b""
        return self.proc

    def _answer(self, proc: subprocess.Popen) -> dict:
        """The next answer line, read from the pipe itself: a buffered readline could take
        two lines at once and leave select waiting for the second."""
        while b"\n" not in self._pending:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                if not sel.select(self.timeout):
                    raise TimeoutError
            data = os.read(proc.stdout.fileno(), 1 << 16)
            if not data:
                raise EOFError
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def ask(self, case: dict) -> list[dict]:
        """The worker's answers to ``case``; when it dies (or hangs past ``timeout`` s) the
        last answer is ``{"died": step, "returncode": rc}``, step the one it died in."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        answers: list[dict] = []
        try:
            proc.stdin.write(json.dumps(case).encode() + b"\n")
            proc.stdin.flush()
            while not (answer := self._answer(proc)).get("done"):
                answers.append(answer)
            return answers
        except (OSError, EOFError, TimeoutError, ValueError) as err:
            step = "ref" if answers and answers[-1]["step"] == "tvm" else "tvm"
            proc.kill()
            rc = proc.wait()
            self.proc = None
            return [*answers, {"died": step, "returncode": rc, "why": type(err).__name__}]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def load_outputs(path: str) -> list[np.ndarray]:
    """The arrays a worker saved at ``path`` (``<out>.tvm.npz`` or ``<out>.ref.npz``)."""
    with np.load(path) as f:
        return [f[f"arr_{k}"] for k in range(len(f.files))]


__all__ = ["DB_MUTATIONS", "ELEM_TYPES", "MODEL_MUTATIONS", "OP_TYPES", "SPECIAL_VALUES",
           "FuzzWorker", "load_outputs", "mutate_file", "mutate_model", "serve"]


if __name__ == "__main__":
    serve()
