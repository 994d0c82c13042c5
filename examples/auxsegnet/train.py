"""AuxSegNet-style example: classification + saliency + segmentation with cross-task affinity.

    python examples/auxsegnet/train.py                          # default config
    python examples/auxsegnet/train.py --set train.stage_iterations=50 --set train.stages=2

Built from the same wsss_blocks as the CoSA example (CAM extraction, EMA teacher, CAM
normalisation, losses, mIoU, MF-Seg data and views) plus the affinity and saliency
blocks. Following Xu et al., AuxSegNet, ICCV 2021 (Sec. 3):

* one shared timm backbone; a CAM classifier (image logits, CAM M), a saliency head
  (logit map Z) and a segmentation head (logits S, C+1 channels);
* each head's hidden features give a non-local affinity; the two are fused with
  learned weights into the cross-task affinity A, which refines S and Z (A·S, A·Z);
* stage 0 (warm-up) trains classification and saliency; after every stage the whole
  train split gets new pseudo-labels from the refined outputs: the CAM refined by A
  fused with a saliency map (the mean of σ(A·Z) and the fixed saliency input);
* stage k ≥ 1: L = L_cls + CE(S, Y) + CE(A·S, Y) + BCE(Z, s) + BCE(A·Z, s).

The fixed saliency input is a folder of maps (as AuxSegNet users bring DSS maps) or a
classical estimator computed once and cached (default: the border prior).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch

from wsss_blocks import (
    IGNORE_INDEX,
    CAMExtractor,
    EMATeacher,
    LargeFOV,
    MeanIoU,
    classification_loss,
    normalize_cam,
    raw_cam2seg_loss,
    set_data_checks,
)
from wsss_blocks.affinity import CrossTaskAffinityFusion, NonLocalAffinity, propagate
from wsss_blocks.data import WeakStrongViews, cached_saliency, load_saliency_maps
from wsss_blocks.data.mfseg import PREFERRED_TEXTURE_IDS
from wsss_blocks.diagnostics import (
    label_confusion,
    label_quality,
    texture_fp_counts,
    texture_fp_rates,
)
from wsss_blocks.losses import saliency_loss
from wsss_blocks.models import CAMBackboneNet
from wsss_blocks.pseudo_labels import fuse_cam_saliency
from wsss_blocks.training import (
    DistInfo,
    Stepper,
    autocast,
    build_adamw,
    build_data,
    distributed,
    eval_batches,
    load_config,
    progress_bar,
    rank_and_world,
    resolve_device,
    sample_indices,
    save_checkpoint,
    seed_everything,
    start_run,
    sum_over_ranks_,
    unwrap,
    wrap_ddp,
    write_metrics,
)
from wsss_blocks.utils import upsample
from wsss_blocks.viz import plot_training_curves, save_overlay_grid

LOSS_WEIGHTS = ("cls", "seg", "seg_refined", "sal", "sal_refined")

# ---------------------------------------------------------------------------- network


class AuxOutput(NamedTuple):
    """Network outputs at the feature grid h × w (N = h·w).

    logits (B, C); cam (B, C, h, w) raw; seg (B, C+1, h, w) and sal (B, 1, h, w) logits;
    affinity (B, N, N) cross-task, row-stochastic; seg_refined = A·S; sal_refined = A·Z.
    """

    logits: torch.Tensor
    cam: torch.Tensor
    seg: torch.Tensor
    sal: torch.Tensor
    affinity: torch.Tensor
    seg_refined: torch.Tensor
    sal_refined: torch.Tensor


def _head(head: LargeFOV, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A LargeFOV head split into its hidden features (for the affinity) and its logits."""
    hidden = head.body[:-1](features)
    return hidden, head.body[-1](hidden)


class AuxSegNet(CAMBackboneNet):
    """Shared timm backbone, CAM classifier, saliency and segmentation heads, cross-task
    affinity. Input: (B, 3, H, W) float in [0, 1] (normalised inside)."""

    def __init__(self, num_classes: int, m: dict):
        super().__init__(CAMExtractor(
            m["backbone"], num_classes, m["last_index"], None, m["pooling"],
            pretrained=m["pretrained"], output_stride=m["output_stride"],
        ))  # fmt: skip
        d, width = self.cam_extractor.feature_channels, m["head_width"]
        self.seg_head = LargeFOV(d, num_classes + 1, width, m["head_dilation"])
        self.sal_head = LargeFOV(d, 1, width, m["head_dilation"])
        self.seg_affinity = NonLocalAffinity(width, m["key_channels"])
        self.sal_affinity = NonLocalAffinity(width, m["key_channels"])
        self.fusion = CrossTaskAffinityFusion(2)

    def forward(self, images: torch.Tensor) -> AuxOutput:
        out = self.cam_extractor(self.normalize(images))
        f_seg, seg = _head(self.seg_head, out.features)
        f_sal, sal = _head(self.sal_head, out.features)
        affinity = self.fusion(self.seg_affinity(f_seg), self.sal_affinity(f_sal))
        return AuxOutput(
            out.logits, out.cam, seg, sal, affinity,
            propagate(affinity, seg), propagate(affinity, sal),
        )  # fmt: skip


# ------------------------------------------------------------------- saliency input


def saliency_input(cfg: dict, images: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The fixed saliency of the train split, (N, H, W) float in [0, 1], and its origin."""
    s = cfg["saliency"]
    if s["source"] == "directory":
        if not s["directory"]:
            raise ValueError("saliency.source=directory needs saliency.directory")
        names = [f"{i:05d}" for i in range(images.shape[0])]
        maps = load_saliency_maps(s["directory"], names, size=tuple(images.shape[-2:]))
        return maps, str(s["directory"])
    kwargs = {}
    if s["source"] == "border_prior":
        kwargs = {"border": s["border"], "regularization": s["regularization"]}
    maps, path = cached_saliency(images, s["source"], **kwargs)
    return maps, str(path)


# ---------------------------------------------------------------------- pseudo-labels


@torch.no_grad()
def pseudo_labels(net, images, labels, sal_input, cfg, refine: bool):
    """Segmentation pseudo-labels Y (N, H, W) int64 and saliency labels s (N, H, W) in
    [0, 1] for a whole split, from the net's (refined) CAM and saliency outputs."""
    p = cfg["pseudo_labels"]
    net.eval()
    ys, ss = [], []
    bs = cfg["eval"]["batch_size"]
    device = next(net.parameters()).device
    for i in range(0, images.shape[0], bs):
        x = images[i : i + bs].to(device).float() / 255
        lab = labels[i : i + bs].to(device)
        size = x.shape[-2:]
        with amp(cfg, x):
            out = net(x)
        cam = normalize_cam(out.cam.float(), lab)  # (B, C, h, w) in [0, 1]
        sal = sal_input[i : i + bs].to(device)
        if refine:
            affinity = out.affinity.float()
            cam = normalize_cam(propagate(affinity, cam, p["propagation_steps"]), lab)
            z = propagate(affinity, out.sal.float(), p["propagation_steps"])
            sal = (
                p["saliency_mix"] * torch.sigmoid(upsample(z, size)[:, 0])
                + (1 - p["saliency_mix"]) * sal
            )
        # Bilinear resizing is convex; the clamp only absorbs float rounding.
        cam = upsample(cam, size).clamp(0.0, 1.0)
        sal = sal.clamp(0.0, 1.0)
        y = fuse(cam, lab, sal, p)
        ys.append(y.cpu())
        ss.append(sal.cpu())
    return torch.cat(ys), torch.cat(ss)


def fuse(cam, labels, saliency, p: dict) -> torch.Tensor:
    """CAM + saliency → segmentation pseudo-label with the config's thresholds and rule."""
    return fuse_cam_saliency(
        cam, labels, saliency, p["cam_threshold"], p["saliency_threshold"],
        p["background"], p["single_class_fill"],
    )  # fmt: skip


def miou_of(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """mIoU of label maps, pixels labelled 255 in ``pred`` counted as background (honest
    pseudo-label quality: an ignored pixel is not a correct one)."""
    m = MeanIoU(num_classes)
    m.update(torch.where(pred == IGNORE_INDEX, torch.zeros_like(pred), pred), target.long())
    return m.compute().miou


def pseudo_label_diagnostics(y, masks, labels, train_set) -> dict:
    """The pseudo-labels' quality by ``wsss_blocks.diagnostics``, as for CoSA's CPL:
    on the pixels they label (mIoU, foreground precision and recall, coverage) and
    their false positives on each class's preferred MF-Seg texture against others."""
    previous = set_data_checks(False)  # (values come from the library's own blocks)
    try:
        q = label_quality(label_confusion(y, masks.long(), train_set.num_classes + 1))
        preferred = list(PREFERRED_TEXTURE_IDS)  # MF-Seg's classes, in order
        kinds = torch.as_tensor(train_set.texture_ids).view(-1, 1, 1).expand_as(y)
        fp = texture_fp_rates(texture_fp_counts(y, masks.long(), labels, kinds, preferred))
    finally:
        set_data_checks(previous)
    return {"miou": q["miou"], "fg_precision": q["fg_precision"], "fg_recall": q["fg_recall"],
            "coverage": q["coverage"], "texture_fp_preferred": fp["mean_preferred"],
            "texture_fp_other": fp["mean_other"]}  # fmt: skip


def pack(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Pack a label map and a saliency map into one integer map so that the views move
    them with one geometry: value = Y·256 + round(254·s) (255 stays free)."""
    return y.long() * 256 + (s * 254 + 0.5).long()


def unpack(packed: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack` on a view; padding (``valid`` False) becomes Y = 255."""
    y = torch.where(valid, packed // 256, torch.full_like(packed, IGNORE_INDEX))
    return y, (packed % 256).float().div_(254).clamp_(0, 1) * valid


# ------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(net, val_set, cfg, out_dir: Path, stage: int, figures: bool = True) -> dict:
    """Segmentation mIoU on val for S and for the refined A·S, and (``figures``) an
    overlay PNG. Under torchrun each rank scores its shard; every rank gets the result."""
    net.eval()
    k = val_set.num_classes + 1
    plain, refined = MeanIoU(k), MeanIoU(k)
    images, masks, labels = val_set.tensors()
    device = next(net.parameters()).device
    rank, world = rank_and_world()
    for x, gt, _ in eval_batches(val_set, cfg["eval"]["batch_size"], device=device,
                                 rank=rank, world_size=world):  # fmt: skip
        with amp(cfg, x):
            out = net(x)
        plain.update(upsample(out.seg.float(), x.shape[-2:]).argmax(1), gt)
        refined.update(upsample(out.seg_refined.float(), x.shape[-2:]).argmax(1), gt)
    for meter in (plain, refined):
        sum_over_ranks_(meter.confusion)
    result = {"val_seg_miou": plain.compute().miou, "val_refined_miou": refined.compute().miou}

    n = cfg["eval"]["num_overlays"] if figures else 0
    if n:
        x = images[:n].to(device).float() / 255
        lab, gt = labels[:n].to(device), masks[:n].to(device).long()
        with amp(cfg, x):
            out = net(x)
        size = x.shape[-2:]
        cam = upsample(normalize_cam(out.cam.float(), lab), size).clamp(0, 1)
        sal = torch.sigmoid(upsample(out.sal_refined.float(), size)[:, 0])
        p = cfg["pseudo_labels"]
        panels = {
            "saliency": (sal >= p["saliency_threshold"]).long(),
            "PL": fuse(cam, lab, sal, p),
            "prediction": upsample(out.seg.float(), size).argmax(1),
            "refined": upsample(out.seg_refined.float(), size).argmax(1),
            "GT": gt,
        }
        panels = {name: v.cpu() for name, v in panels.items()}
        save_overlay_grid(out_dir / "overlays" / f"stage_{stage}.png", x.cpu(), cam.amax(1).cpu(),
                          panels, k, class_names=val_set.class_names)  # fmt: skip
    return result


# ------------------------------------------------------------------------------- main


def lr_factor(step: int, total: int, t: dict) -> float:
    """Poly decay over all stages, with a linear warm-up at the start of *every* stage: a
    factor in [0, 1]. The re-warm-up matters: the segmentation loss starts at stage 1 on
    a head whose Adam moments saw almost no gradient, and full-rate steps blew it up."""
    warm, first = t["lr_warmup_iterations"], t["warmup_iterations"]
    in_stage = step if step < first else (step - first) % t["stage_iterations"]
    return min(1.0, (in_stage + 1) / warm) * (1 - step / total) ** t["poly_power"]


def amp(cfg: dict, x: torch.Tensor):
    """The run's autocast (``train.amp``) on the device of ``x``, for a back-propagated
    pass or not as ``torch.is_grad_enabled()`` says (``auto`` differs on the CPU)."""
    return autocast(x.device, cfg["train"]["amp"])


def step_losses(model, batch, weights: dict, stage: int, cfg: dict) -> dict:
    """Loss terms of one batch; stage 0 (warm-up) trains classification and the plain
    saliency head only."""
    x, labels, y, s, valid = batch
    size = x.shape[-2:]
    with amp(cfg, x):
        out = model(x)
    terms = {"cls": classification_loss(out.logits.float(), labels)}
    if weights["sal"]:
        terms["sal"] = saliency_loss(upsample(out.sal.float(), size), s, valid)
    if stage > 0:
        # The cross-task affinity trains only once both tasks have labels: with the
        # saliency term alone it inflated the segmentation features, and the first
        # segmentation logits of stage 1 then gave CE ≈ 100.
        if weights["sal_refined"]:
            terms["sal_refined"] = saliency_loss(upsample(out.sal_refined.float(), size), s, valid)
        if weights["seg"]:
            terms["seg"] = raw_cam2seg_loss(upsample(out.seg.float(), size), y)
        if weights["seg_refined"]:
            terms["seg_refined"] = raw_cam2seg_loss(upsample(out.seg_refined.float(), size), y)
    return terms


CURVES = {  # curves.png: metric name -> key of a stage record
    "segmentation mIoU (val)": "val_seg_miou",
    "refined A.S mIoU (val)": "val_refined_miou",
    "pseudo-labels mIoU (train)": "train_pl_miou",
}


def plot_curves(loss_log: list, history: list, path: Path) -> None:
    """curves.png: the loss terms and, at the end of each stage, the mIoU records."""
    evals = {
        name: [(r["step"], r[key]) for r in history if key in r] for name, key in CURVES.items()
    }
    plot_training_curves(loss_log, evals, path, title="auxsegnet")


def train(cfg: dict) -> dict:
    """Train all stages as ``cfg`` says; returns the final metrics and the per-stage
    history (also written to ``output_dir/metrics.json``). Under ``torchrun`` each
    process trains on its shard (DDP), the pseudo-labels of the whole split are made
    on every rank from the same network, and rank 0 writes."""
    if cfg["data"]["name"] != "mfseg":
        raise ValueError("data.name must be 'mfseg' for the AuxSegNet example: it keeps the "
                         "pseudo-labels of the whole train split in memory")  # fmt: skip
    with distributed(resolve_device(cfg["train"]["device"])) as (dist, device):
        return _train(cfg, dist, device)


def _train(cfg: dict, dist: DistInfo, device: torch.device) -> dict:
    say = print if dist.is_main else (lambda *a, **k: None)
    out_dir, device = start_run(cfg, device, dist)
    t0 = time.time()
    data = build_data(cfg)
    train_set, val_set = data.train, data.val
    images, masks, labels = train_set.tensors()
    sal_input, sal_origin = saliency_input(cfg, images)
    t = cfg["train"]
    say(f"data: {train_set!r}\n      {val_set!r}\nsaliency: {sal_origin} "
        f"({time.time() - t0:.1f} s)\nbatch: {t['batch_size']} per process x "
        f"{dist.world_size} process(es)")  # fmt: skip
    num_classes = train_set.num_classes + 1

    model = AuxSegNet(train_set.num_classes, cfg["model"]).to(device)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    teacher = EMATeacher(model, t["ema_momentum"]) if t["use_teacher"] else None
    ddp_model = wrap_ddp(model, device, t.get("sync_batchnorm", False))
    model = unwrap(ddp_model)
    if dist.enabled:  # initialisations agree; augmentation streams differ per rank
        seed_everything(cfg["seed"] + dist.rank)
    eval_net = teacher.module if teacher is not None else model
    optimizer = build_adamw(model, t["lr"], t["head_lr_mult"], t["weight_decay"])
    total = t["warmup_iterations"] + t["stages"] * t["stage_iterations"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, t))
    views = WeakStrongViews(cfg["data"]["crop_size"], scale=tuple(cfg["data"]["view_scale"]))
    weights = {k: float(cfg["loss"][k]) for k in LOSS_WEIGHTS}
    stepper = Stepper(model, optimizer, scheduler, weights, teacher, t["amp"], t["grad_clip"])

    # Stage 0 trains saliency on the input maps; no segmentation label exists yet.
    y_all = torch.full_like(masks, IGNORE_INDEX, dtype=torch.long)
    s_all = sal_input
    history, step = [], 0
    fg = (masks > 0).float()
    for stage in range(t["stages"] + 1):
        ts = time.time()
        record = {"stage": stage}
        if stage > 0:  # new pseudo-labels from the last stage's (refined) outputs
            refine = stage > 1 or cfg["pseudo_labels"]["refine_first"]
            y_all, s_all = pseudo_labels(eval_net, images, labels, sal_input, cfg, refine)
            record["train_pl_miou"] = miou_of(y_all, masks, num_classes)
            record["train_pl_ignored"] = float((y_all == IGNORE_INDEX).float().mean())
            s_bin = s_all >= cfg["pseudo_labels"]["saliency_threshold"]
            record["train_saliency_iou"] = float((s_bin * fg).sum() / ((s_bin + fg) > 0).sum())
            record["diagnostics"] = pseudo_label_diagnostics(y_all, masks, labels, train_set)
            d = record["diagnostics"]
            say(f"stage {stage}: pseudo-labels mIoU (train) "
                f"{100 * record['train_pl_miou']:.1f}%, "
                f"ignored {100 * record['train_pl_ignored']:.1f}%, saliency IoU "
                f"{100 * record['train_saliency_iou']:.1f}%; on labelled pixels mIoU "
                f"{100 * d['miou']:.1f}%, fg precision {100 * d['fg_precision']:.1f}%, "
                f"recall {100 * d['fg_recall']:.1f}%; false positives on the class's own "
                f"texture {100 * d['texture_fp_preferred']:.1f}% vs others "
                f"{100 * d['texture_fp_other']:.1f}%")  # fmt: skip
        packed_all = pack(y_all, s_all)
        iters = t["warmup_iterations"] if stage == 0 else t["stage_iterations"]
        bar = progress_bar(iters, desc=f"auxsegnet stage {stage}", disable=not dist.is_main)
        for _ in range(iters):
            model.train()
            idx = sample_indices(len(train_set), t["batch_size"], dist.rank, dist.world_size)
            x_all, packed_batch = images[idx].to(device), packed_all[idx].to(device)
            _, x, packed, valid = views(x_all.float() / 255, packed_batch)
            y, s = unpack(packed, valid)
            if t["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            batch = (x, labels[idx].to(device), y, s, valid)
            stepper.step(step, step_losses(ddp_model, batch, weights, stage, cfg))
            bar.update()
            show_every = stepper.log_every * (1 if device.type == "cpu" else 20)
            if dist.is_main and step % show_every == 0:  # reading the log waits for the device
                post = {k: f"{v:.3f}" for k, v in stepper.loss_log[-1][1].items()}
                bar.set_postfix(post, refresh=False)
            step += 1
        bar.close()
        record.update(evaluate(eval_net, val_set, cfg, out_dir, stage, dist.is_main))
        record["fusion_weights"] = model.fusion.weights.detach().tolist()
        record["minutes"] = (time.time() - ts) / 60
        record["step"] = step
        history.append(record)
        say(f"stage {stage}: segmentation mIoU (val) {100 * record['val_seg_miou']:.1f}% "
            f"(refined A.S {100 * record['val_refined_miou']:.1f}%), "
            f"{record['minutes']:.1f} min")  # fmt: skip
        if dist.is_main:
            plot_curves(stepper.loss_log, history, out_dir / "curves.png")
            with open(out_dir / "metrics.json", "w") as f:  # per stage: a cut-off run keeps them
                json.dump({"history": history, "losses": stepper.loss_log}, f, indent=1)
            save_checkpoint(out_dir / "checkpoint.pt", {
                "model": model.state_dict(),
                "teacher": teacher.state_dict() if teacher is not None else None,
                "stage": stage, "step": step, "history": history, "config": cfg,
                "world_size": dist.world_size,
            })  # fmt: skip
    final = {**history[-1], "minutes": (time.time() - t0) / 60, "method": cfg["method"],
             "world_size": dist.world_size}  # fmt: skip
    if dist.is_main:
        write_metrics(out_dir, final, history, stepper.loss_log)
    return final


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs/default.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    final = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return final  # under torchrun rank 0 reports
    print(
        f"\nFINAL (auxsegnet, {final['minutes']:.1f} min): segmentation mIoU (val) "
        f"{100 * final['val_seg_miou']:.1f}% (refined {100 * final['val_refined_miou']:.1f}%)"
    )
    return final


if __name__ == "__main__":
    main()
