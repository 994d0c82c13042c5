"""Evaluate a CoSA checkpoint's segmentation, single- or multi-scale, on any data set.

    python examples/cosa/evaluate.py runs/cosa_default/checkpoint.pt
    python examples/cosa/evaluate.py runs/cosa_default/checkpoint.pt --scales 1.0 0.5 1.5 --flip
    python examples/cosa/evaluate.py runs/voc/checkpoint.pt --set data.root=/data/VOCdevkit

Everything (network, number and names of classes, data set) comes from the checkpoint;
``--set`` changes its config (e.g. ``data.root`` on another machine). Runs the network
the trainer evaluates (the EMA teacher where there is one) on the val split (or the
train split of CPL evaluation) and prints the honest mIoU, the tag-masked one if asked
(``--tag-masked``, labelled: it uses the GT tags), and the per-class IoU by name. With
``--scales``/``--flip`` the logits of every scale and of the mirrored images are summed
(``wsss_blocks.multiscale_seg``, the official release's test-time rule); ``--window``
segments images larger than it with a sliding window. Without them the number is the
trainer's own val mIoU at that step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as a file: the repository root makes `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.cosa import train as T  # noqa: E402
from wsss_blocks.data import FASHION_MNIST_CLASSES  # noqa: E402
from wsss_blocks.training import (  # noqa: E402
    build_data,
    format_iou_table,
    merge,
    parse_overrides,
    resolve_device,
)


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "val",
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    batch_size: int | None = None,
    tag_masked: bool = False,
    overrides: dict | None = None,
    device: str = "auto",
) -> dict:
    """Segmentation mIoU of a checkpoint on ``split``: ``miou`` and per-class ``iou``
    (background first), in [0, 1], the ``class_names``, and with ``tag_masked`` also
    ``miou_tag_masked`` (GT tags used, a diagnostic). ``batch_size`` defaults to the
    run's ``eval.batch_size`` (bf16 results depend on it, so the single-scale number is
    the trainer's own); ``overrides`` (a nested dict) is merged into the checkpoint's
    config. Raises ValueError if ``split`` is not 'train' or 'val'."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    net, state = T.load_eval_net(checkpoint)
    cfg = merge(state["config"], overrides or {})
    net = net.to(resolve_device(device))
    data = build_data(cfg)
    names = tuple(state.get("class_names") or FASHION_MNIST_CLASSES)
    r, r_masked = T.segmentation_miou(
        net, data.val if split == "val" else data.cpl, cfg, data.num_classes + 1,
        scales, flip, batch_size, tag_masked,
    )  # fmt: skip
    result = {
        "checkpoint": str(checkpoint),
        "step": state["step"],
        "split": split,
        "scales": list(scales),
        "flip": flip,
        "miou": r.miou,
        "iou": r.iou,
        "class_names": list(names),
    }
    if r_masked is not None:
        result["miou_tag_masked"] = r_masked.miou
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped images")
    parser.add_argument("--tag-masked", action="store_true",
                        help="also the tag-masked mIoU (uses the GT image tags)")  # fmt: skip
    parser.add_argument("--window", type=int, help="sliding-window side for larger images (px)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="change the checkpoint's config, e.g. data.root=...")  # fmt: skip
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.window:
        overrides.setdefault("eval", {})["window"] = args.window
    r = evaluate_checkpoint(args.checkpoint, args.split, tuple(args.scales), args.flip,
                            tag_masked=args.tag_masked, overrides=overrides,
                            device=args.device)  # fmt: skip
    how = f"scales {args.scales}{' + flip' if args.flip else ''}"
    line = f"step {r['step']}, {args.split}, {how}: mIoU {100 * r['miou']:.1f}%"
    if args.tag_masked:
        line += f"  (tag-masked, uses GT tags: {100 * r['miou_tag_masked']:.1f}%)"
    print(line)
    print(format_iou_table(r["iou"], r["class_names"]))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
