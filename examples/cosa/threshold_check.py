"""Compare the threshold policies and fixed thresholds on a checkpoint's max-CAM values.

    python examples/cosa/threshold_check.py runs/cosa_default/checkpoint.pt [--images 640]
        [--cam-refine none|par] [--set model.KEY=VALUE ...]

Prints the distribution of ν = max_c M' (the AN's normalised CAM over present classes,
at image resolution, multi-scale where the config says so) on the first train images,
the ξ each GMMThresholdSearcher policy picks from them, and the CPL mIoU of fixed
thresholds, so the policy choice can be checked on your own data. ``--cam-refine``
overrides the checkpoint's ``model.cam_refine``: ``par`` refines the CAM by PAR (with the
checkpoint's ``par_*`` settings, else those of ``default.yaml``), ``none`` does not, so one
checkpoint shows what PAR does to its CPLs. ``--set`` overrides other CAM settings of the
checkpoint's config (``model.cam_scales``, ``model.cam_flip``, ``model.par_*``), so the
cost cuts of the AN's pass can be measured on one trained network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if not __package__:  # run as a file: the repository root makes `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.cosa import train as T  # noqa: E402
from wsss_blocks import GMMThresholdSearcher, cam_to_cpl  # noqa: E402
from wsss_blocks.training import build_data, eval_batches, load_config, merge, parse_overrides  # noqa: E402

FIXED_THRESHOLDS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)


def with_cam_refine(model_cfg: dict, refine: str) -> dict:
    """``model_cfg`` with ``cam_refine`` set to ``refine`` ("none" or "par"); PAR settings
    the checkpoint lacks (runs before PAR) come from ``default.yaml``."""
    defaults = load_config(T.DEFAULT_CONFIG)["model"]
    par_keys = {k: v for k, v in defaults.items() if k.startswith("par_")}
    return {**par_keys, **model_cfg, "cam_refine": None if refine == "none" else refine}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--cam-refine", choices=("none", "par"), default=None,
                        help="override the checkpoint's model.cam_refine")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                        help="override a model.* CAM setting (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    net, state = T.load_eval_net(args.checkpoint)
    cfg = state["config"]
    if args.cam_refine is not None:
        cfg["model"] = with_cam_refine(cfg["model"], args.cam_refine)
    if any(not item.startswith("model.") for item in args.set):
        raise ValueError(f"--set takes model.KEY=VALUE items only, got {args.set}")
    cfg = merge(cfg, parse_overrides(args.set))
    data = build_data(cfg)
    if data.name != "mfseg":
        raise ValueError("threshold_check.py compares CAMs of one size: MF-Seg checkpoints only")
    # the trainer's CPL evaluation: same batches, same precision, so the same CAMs
    n, cams, labels, masks = min(args.images, len(data.cpl)), [], [], []
    with torch.no_grad():
        for x, gt, lab in eval_batches(data.cpl, cfg["eval"]["batch_size"], n):
            cams.append(T.an_pass(net, x, lab, cfg)[0])
            labels.append(lab), masks.append(gt)
    cam, labels, masks = torch.cat(cams), torch.cat(labels), torch.cat(masks)
    nu = cam.amax(1)
    print(
        f"step {state['step']}: {n} images, cam_refine {cfg['model'].get('cam_refine')},"
        f" cam_scales {cfg['model'].get('cam_scales', [1.0])},"
        f" cam_flip {cfg['model'].get('cam_flip', False)},"
        f" nu == 0 for {100 * (nu == 0).float().mean():.1f}%,"
        f" <= 0.05 for {100 * (nu <= 0.05).float().mean():.1f}%"
    )
    print("histogram of nu (10 bins on [0, 1]):", torch.histc(nu, 10, 0, 1).int().tolist())
    result = {"policies": {}, "fixed": {}}
    for policy in ("paper", "cosa-code"):
        searcher = GMMThresholdSearcher(queue_size=100, policy=policy)
        for batch in nu.split(cfg["train"]["batch_size"]):
            searcher.update(batch)
        xi, (low, high) = float(searcher.threshold), (float(b) for b in searcher.bounds)
        result["policies"][policy] = {"xi": xi, "bounds": (low, high)}
        print(f"policy {policy}: xi {xi:.3f}, bounds ({low:.3f}, {high:.3f})")
    for th in FIXED_THRESHOLDS:
        miou = T.miou_meter(data.num_classes + 1, cfg)
        miou.update(cam_to_cpl(cam, labels, th), masks)
        result["fixed"][th] = miou.compute().miou
        print(f"fixed threshold {th:.2f}: CPL mIoU {100 * result['fixed'][th]:.1f}%")
    return result


if __name__ == "__main__":
    main()
