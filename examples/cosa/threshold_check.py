"""Compare the threshold policies and fixed thresholds on a checkpoint's max-CAM values.

    python examples/cosa/threshold_check.py runs/cosa_default/checkpoint.pt [--images 640]

Prints the distribution of ν = max_c M' (the AN's normalised CAM over present classes,
at image resolution, multi-scale where the config says so) on the first train images,
the ξ each GMMThresholdSearcher policy picks from them, and the CPL mIoU of fixed
thresholds, so the policy choice can be checked on your own data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import train as T  # noqa: E402

from wsss_blocks import GMMThresholdSearcher, MeanIoU, cam_to_cpl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=640)
    args = parser.parse_args()
    net, state = T.load_eval_net(args.checkpoint)
    cfg = state["config"]
    train_set, _ = T.build_data(cfg)
    images, masks, labels = train_set.tensors()
    n, bs = min(args.images, len(train_set)), 64
    cams = []
    with torch.no_grad():
        for i in range(0, n, bs):
            x = images[i : min(i + bs, n)].float() / 255
            cams.append(T.cpl_cam(net, x, net(x).cam, labels[i : i + len(x)], cfg))
    cam = torch.cat(cams)
    nu = cam.amax(1)
    print(
        f"step {state['step']}: {n} images, nu == 0 for {100 * (nu == 0).float().mean():.1f}%,"
        f" <= 0.05 for {100 * (nu <= 0.05).float().mean():.1f}%"
    )
    print("histogram of nu (10 bins on [0, 1]):", torch.histc(nu, 10, 0, 1).int().tolist())
    for policy in ("paper", "cosa-code"):
        searcher = GMMThresholdSearcher(queue_size=100, policy=policy)
        for batch in nu.split(cfg["train"]["batch_size"]):
            searcher.update(batch)
        low, high = (float(b) for b in searcher.bounds)
        print(
            f"policy {policy}: xi {float(searcher.threshold):.3f}, bounds ({low:.3f}, {high:.3f})"
        )
    for th in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        miou = MeanIoU(train_set.num_classes + 1)
        miou.update(cam_to_cpl(cam, labels[:n], th), masks[:n].long())
        print(f"fixed threshold {th:.1f}: CPL mIoU {100 * miou.compute()['miou']:.1f}%")


if __name__ == "__main__":
    main()
