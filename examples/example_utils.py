"""Run plumbing shared by the example trainers (CoSA, AuxSegNet): YAML configs with
``base:`` inheritance and ``--set`` overrides, the MF-Seg splits, bf16 autocast, seeds,
atomic checkpoints and RNG state for bit-exact resume.

Not part of the library: the trainers import it with their parent folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml

from wsss_blocks.data import MFSeg


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: ``update`` wins; unknown keys are an error (catches typos)."""
    out = dict(base)
    for key, value in update.items():
        if key not in base:
            raise ValueError(f"unknown config key {key!r} (known: {sorted(base)})")
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """Read a YAML config and apply ``section.key=value`` overrides (values parsed as YAML).

    A config may start from another with ``base: other.yaml`` (path relative to it) and
    change only what differs, e.g. the ablation configs.
    """
    path = Path(path)
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if "base" in cfg:
        cfg = merge(load_config(path.parent / cfg.pop("base")), cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise ValueError(f"--set {key}: unknown section {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"--set {key}: unknown key {leaf!r} (known: {sorted(node)})")
        node[leaf] = yaml.safe_load(value)
    return cfg


def build_data(cfg: dict) -> tuple[MFSeg, MFSeg]:
    """The cached MF-Seg train and val splits the config's ``data`` section describes."""
    d = cfg["data"]
    if d["name"] != "mfseg":
        raise ValueError(f"data.name must be 'mfseg' in these examples, got {d['name']!r}")
    common = dict(
        num_train=d["num_train"],
        num_val=d["num_val"],
        image_size=d["image_size"],
        max_objects=d["max_objects"],
        scale_range=tuple(d["scale_range"]),
        cooccurrence=d["cooccurrence"],
        seed=cfg["seed"],
    )
    return MFSeg("train", **common), MFSeg("val", **common)


def autocast(enabled: bool):
    """bf16 autocast on CPU (about 2x faster here), or a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def start_run(cfg: dict) -> Path:
    """Set threads and seeds, create ``output_dir`` and save the resolved config there."""
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    random.seed(cfg["seed"])
    out_dir = Path(cfg["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "config.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    return out_dir


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic save: write a temporary file, then rename over the old checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    """The torch, NumPy and Python RNG states, for a bit-exact ``--resume``."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
