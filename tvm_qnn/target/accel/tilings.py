# SPDX-License-Identifier: Apache-2.0
"""Tuning for the simulated accelerator: its tilings, scored by the simulator's cycle count.

An offloaded layer's program is fixed by two parameters of its tiling (output rows per tile, output
blocks per weight group, :class:`~.tiling.TilingChoice`); the default is
the pipeline model's pick. :func:`tune_tilings` runs each candidate of
:func:`~.tiling.tiling_space` on the cycle-counting simulator (the
accelerator's "runner") and keeps the fastest per layer signature in ``accel_tilings.json``
in the work directory (rewritten atomically after each layer; a re-run skips what is there).
``compile(model, "accel", tuning_db=work_dir)`` and the shipped
``schedules/accel-<config>/`` folder apply it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from ... import knobs
from ...errors import NotOffloadable, TvmQnnError
from ...topi.layer import plan_layer
from ...transform import find_layers
from .driver import AccelLayer
from .lower import lower_layer
from .tiling import TilingChoice, geometry, tiling_space

logger = logging.getLogger("tvm_qnn")
TILINGS_FILE = "accel_tilings.json"


def tiling_key(plan, config) -> str:
    """What a tiling record serves: the layer's geometry and bits on one configuration."""
    g = geometry(plan, config.block_in)
    text = json.dumps([repr(g), config.to_json()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_tilings(folder: str | os.PathLike | None) -> dict:
    """The records of ``folder``'s ``accel_tilings.json`` (empty without one)."""
    if folder is None:
        return {}
    path = os.path.join(os.fspath(folder), TILINGS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:
        raise TvmQnnError(f"{path}: not a tiling database ({err})") from None


def find_tilings(config, tuning_db=None) -> tuple[dict, str | None]:
    """``(records, where)`` of tilings for the accelerator ``config``: from ``tuning_db`` when
    given, else the shipped ``schedules/accel-<config name>/`` folder."""
    if tuning_db is not None:
        return load_tilings(tuning_db), os.fspath(tuning_db)
    if knobs.schedules_dir() == "off":
        return {}, None
    for folder in knobs.schedules_dirs():
        path = os.path.join(folder, f"accel-{config.name}")
        records = load_tilings(path)
        if records:
            return records, path
    return {}, None


def _save(path: str, records: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _cycles(plan, config, choice, codes) -> int:
    layer = AccelLayer(plan.layer.name, plan.layer.kind, "", lower_layer(plan, config, choice))
    layer(codes)
    return int(layer.profile()["cycles"])


def tune_tilings(mod, config, layout, work_dir, *, trials: int = 64) -> dict:
    """Search the tilings of every offloadable layer of the Relax module ``mod`` on the
    simulator of ``config`` (``layout``: the host's, for the layers' plans).

    Returns ``{layer name: record}`` with ``rows``, ``group_blocks``, ``cycles``,
    ``default_cycles`` and ``trials`` per layer; the records also go to
    ``work_dir/accel_tilings.json`` keyed by :func:`tiling_key`.
    """
    from tqdm import tqdm

    work_dir = os.fspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, TILINGS_FILE)
    records = load_tilings(work_dir)
    report = {}
    for match in find_layers(mod["main"]):
        if match.layer is None:
            continue
        plan = plan_layer(match.layer, layout)
        key = tiling_key(plan, config)
        if key in records:
            logger.info("%s: tiling in the database, skipped", match.name)
            report[match.name] = records[key]
            continue
        try:
            space = tiling_space(plan, config)[:trials]
        except NotOffloadable as err:
            logger.info("%s: not offloaded (%s)", match.name, err)
            continue
        rng = np.random.default_rng(0)
        layer = match.layer
        hi = min((1 << layer.act_bits) - 1,
                 (np.iinfo(layer.input_dtype).max - layer.act_lo) // layer.act_step)
        u = rng.integers(0, hi + 1, layer.input_shape)
        codes = (layer.act_lo + layer.act_step * u).astype(layer.input_dtype)
        default = _cycles(plan, config, TilingChoice(), codes)
        best, best_cycles = TilingChoice(), default
        for choice in tqdm(space, desc=f"tiling {match.name}", unit="trial", leave=True):
            cycles = _cycles(plan, config, choice, codes)
            if cycles < best_cycles:
                best, best_cycles = choice, cycles
        records[key] = dict(layer=match.name, rows=best.rows, group_blocks=best.group_blocks,
                            cycles=best_cycles, default_cycles=default, trials=len(space))
        _save(path, records)
        report[match.name] = records[key]
    if not report:
        raise TvmQnnError("the model has no layer the accelerator can run")
    return report


__all__ = ["TILINGS_FILE", "find_tilings", "load_tilings", "tiling_key", "tune_tilings"]
