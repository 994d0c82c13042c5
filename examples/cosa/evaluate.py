"""Evaluate a CoSA checkpoint's segmentation on MF-Seg, single- or multi-scale.

    python examples/cosa/evaluate.py runs/cosa_default/checkpoint.pt
    python examples/cosa/evaluate.py runs/cosa_default/checkpoint.pt --scales 1.0 1.5 --flip

Runs the network the trainer evaluates (the EMA teacher where there is one) on the
val split (or train) and prints the honest mIoU, the tag-masked one if asked
(``--tag-masked``, labelled: it uses the GT tags), and the per-class IoU. With
``--scales``/``--flip`` the logits of every scale and of the mirrored images are summed
(``wsss_blocks.multiscale_seg``, the official release's test-time rule). Without them
the number is the trainer's own val mIoU at that step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import train as T  # noqa: E402

from wsss_blocks.data import FASHION_MNIST_CLASSES  # noqa: E402


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "val",
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    batch_size: int | None = None,
    tag_masked: bool = False,
) -> dict:
    """Segmentation mIoU of a checkpoint on ``split``: ``miou`` and per-class ``iou``
    (background first), in [0, 1], and with ``tag_masked`` also ``miou_tag_masked`` (GT
    tags used, a diagnostic). ``batch_size`` defaults to the run's ``eval.batch_size``
    (bf16 results depend on it, so the single-scale number is the trainer's own).
    Raises ValueError if ``split`` is not 'train' or 'val'."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    net, state = T.load_eval_net(checkpoint)
    cfg = state["config"]
    train_set, val_set = T.build_data(cfg)
    data = val_set if split == "val" else train_set
    r, r_masked = T.segmentation_miou(net, data, cfg, scales, flip, batch_size, tag_masked)
    result = {
        "checkpoint": str(checkpoint),
        "step": state["step"],
        "split": split,
        "scales": list(scales),
        "flip": flip,
        "miou": r["miou"],
        "iou": r["iou"],
    }
    if r_masked is not None:
        result["miou_tag_masked"] = r_masked["miou"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="val", choices=("val", "train"))
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--flip", action="store_true", help="add horizontally flipped images")
    parser.add_argument("--tag-masked", action="store_true",
                        help="also the tag-masked mIoU (uses the GT image tags)")  # fmt: skip
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    r = evaluate_checkpoint(
        args.checkpoint, args.split, tuple(args.scales), args.flip, tag_masked=args.tag_masked
    )
    how = f"scales {args.scales}{' + flip' if args.flip else ''}"
    line = f"step {r['step']}, {args.split}, {how}: mIoU {100 * r['miou']:.1f}%"
    if args.tag_masked:
        line += f"  (tag-masked, uses GT tags: {100 * r['miou_tag_masked']:.1f}%)"
    print(line)
    names = ["background", *FASHION_MNIST_CLASSES]
    print("  ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, r["iou"], strict=True)))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
