"""Which classical saliency estimator suits MF-Seg? Saliency-vs-foreground IoU per method.

    python examples/auxsegnet/measure_saliency.py [--images 500] [--set section.key=value]

For each estimator of wsss_blocks.saliency, on the first N train images of the
example's MF-Seg split: the foreground IoU of ``saliency ≥ t`` against the ground-truth
objects (mask > 0) at the config's threshold and at the best t of a grid, and the time
per image. The OpenCV estimators are skipped when opencv-contrib is not installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from wsss_blocks import MeanIoU
from wsss_blocks.saliency import SALIENCY_METHODS, estimate_saliency

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)

if not __package__:  # run as a file: the repository root makes `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _trainer():
    from examples.auxsegnet import train

    return train


def foreground_iou(saliency: torch.Tensor, foreground: torch.Tensor, threshold: float) -> float:
    """IoU of the salient region ``saliency ≥ threshold`` with the foreground mask."""
    m = MeanIoU(2)
    m.update((saliency >= threshold).long(), foreground.long())
    return m.compute().iou[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs/default.yaml"))
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    trainer = _trainer()
    cfg = trainer.load_config(args.config, args.set)
    torch.set_num_threads(cfg["threads"])
    images, masks, _ = trainer.build_data(cfg).train.tensors()
    images, fg = images[: args.images], masks[: args.images] > 0
    s = cfg["saliency"]
    threshold = cfg["pseudo_labels"]["saliency_threshold"]
    print(f"{len(images)} MF-Seg train images, foreground {100 * float(fg.float().mean()):.1f}% "
          f"of pixels (IoU of 'all salient': {100 * float(fg.float().mean()):.1f}%)")  # fmt: skip
    at = f"IoU@{threshold}"
    print(f"{'method':18s} {at:>8s} {'best IoU':>9s} {'at t':>5s} {'ms/img':>7s}")
    results = {}
    for method in SALIENCY_METHODS:
        kwargs = {}
        if method == "border_prior":
            kwargs = {"border": s["border"], "regularization": s["regularization"]}
        t0 = time.time()
        try:
            sal = estimate_saliency(images, method, **kwargs)
        except ImportError as err:
            print(f"{method:18s} skipped: {err}")
            continue
        ms = 1000 * (time.time() - t0) / len(images)
        ious = {t: foreground_iou(sal, fg, t) for t in THRESHOLDS}
        best = max(ious, key=ious.get)
        results[method] = {"iou": foreground_iou(sal, fg, threshold), "best_iou": ious[best],
                           "best_threshold": best, "ms_per_image": ms}  # fmt: skip
        r = results[method]
        print(f"{method:18s} {100 * r['iou']:7.1f}% {100 * r['best_iou']:8.1f}% {best:5.1f} "
              f"{ms:7.2f}")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
