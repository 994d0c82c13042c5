# ruff: noqa: E501  (a table: one case per line reads best)
"""Bad inputs tried on every public callable of ``wsss_blocks``: one table of cases that
the tests run (``test_public_api_faults.py``) and that ``docs/reliability.md`` is
generated from (``python tests/reliability/cases.py``), so the document cannot drift
from what the library does.

Each :class:`Spec` builds a callable and good keyword arguments for it and names its
roles: the ``primary`` tensor (rank, NaN, dtype faults), a ``partner`` sharing its
batch, the multi-hot ``labels`` or the integer ``label_map``. Each fault of
:data:`FAULTS` mutates the good arguments in one way.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import wsss_blocks as W
from wsss_blocks.losses import saliency_loss

B, C, H = 2, 3, 8  # batch, foreground classes, side


def _rand(*shape, low=0.0, high=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(shape) + len(shape))
    return low + (high - low) * torch.rand(*shape, generator=g)


def _labels() -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def _label_map(classes: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, classes, (B, H, H), generator=g)


@dataclass
class Spec:
    """A public callable and good arguments: ``build()`` → (callable, kwargs)."""

    name: str
    build: Callable[[], tuple[Callable, dict]]
    primary: str
    partner: str | None = None
    labels: str | None = None
    label_map: tuple[str, int] | None = None  # argument, number of classes K
    not_applicable: dict[str, str] = field(default_factory=dict)  # fault -> why
    custom: dict[str, Callable] = field(default_factory=dict)  # fault -> own mutation


def _module(cls, *args, **kwargs):
    torch.manual_seed(0)
    return cls(*args, **kwargs).eval()


def _timm(arg: str):
    return lambda: (_module(W.TimmFeatures, "resnet18", [2, 3], pretrained=False), {arg: _rand(B, 3, 32, 32)})


def _ema():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    teacher = W.EMATeacher(student, 0.9)
    return teacher, student


def _with_modules(fn, *modules):
    fn.meta_modules = modules  # moved to the meta device with the inputs
    return fn


def _ema_update():
    teacher, student = _ema()
    return teacher.update, {"student": student}


def _nan_parameter(fn, kw):
    with torch.no_grad():
        kw["student"][0].weight[0, 0, 0, 0] = float("nan")
    return "student", "student with a NaN weight"


def _double_student(fn, kw):
    kw["student"].double()
    return "student", "student in float64 (teacher float32)"


def _fusion():
    fusion = _module(W.CrossTaskAffinityFusion, 2)
    return _with_modules(lambda affinities: fusion(*affinities), fusion), {
        "affinities": [torch.softmax(_rand(B, 16, 16), -1), torch.softmax(_rand(B, 16, 17)[..., :16], -1)]}


SPECS: list[Spec] = [
    Spec("normalize_cam", lambda: (W.normalize_cam, {"cam": _rand(B, C, H, H, low=-1), "labels": _labels()}), "cam", "labels", "labels"),
    Spec("pool_cam", lambda: (W.pool_cam, {"cam": _rand(B, C, H, H), "pooling": "gap"}), "cam"),
    Spec("pooled_logits", lambda: (W.pooled_logits, {"features": _rand(B, 5, H, H), "classifier": torch.nn.Conv2d(5, C, 1, bias=False), "pooling": "gmp"}), "features"),
    Spec("multiscale_cam", lambda: (W.multiscale_cam, {"cam_fn": lambda x: x[:, :C], "images": _rand(B, 3, H, H), "scales": (1.0, 0.5), "flip": True}), "images"),
    Spec("multiscale_seg", lambda: (W.multiscale_seg, {"seg_fn": lambda x: x[:, :C], "images": _rand(B, 3, H, H), "scales": (1.0, 0.5), "flip": True}), "images"),
    Spec("classification_loss", lambda: (W.classification_loss, {"logits": _rand(B, C, low=-2, high=2), "labels": _labels()}), "logits", "labels", "labels"),
    Spec("raw_cam2seg_loss", lambda: (W.raw_cam2seg_loss, {"seg_logits": _rand(B, C + 1, H, H), "cpl": _label_map(C + 1), "weights": _rand(B, H, H)}), "seg_logits", "cpl", label_map=("cpl", C + 1)),
    Spec("seg2cam_loss", lambda: (W.seg2cam_loss, {"cam_logits": _rand(B, C, H, H), "spl": _rand(B, C + 1, H, H)}), "cam_logits", "spl"),
    Spec("dense_energy_loss", lambda: (W.dense_energy_loss, {"probs": torch.softmax(_rand(B, C + 1, H, H), 1), "images": _rand(B, 3, H, H), "radius": 2}), "probs", "images"),
    Spec("energy_gate", lambda: (W.energy_gate, {"probs": torch.softmax(_rand(B, C + 1, H, H), 1), "cpl": _label_map(C + 1)}), "probs", "cpl", label_map=("cpl", C + 1)),
    Spec("contrastive_separation_loss", lambda: (W.contrastive_separation_loss, {"features": _rand(16, C, low=-1), "labels": torch.arange(16) % C, "tau": 0.1}), "features", "labels",
         not_applicable={"labels out of range": "labels are any integer ids; rows labelled 255 are left out"}),
    Spec("unit_histogram", lambda: (W.unit_histogram, {"values": _rand(64), "bins": 8}), "values",
         not_applicable={"wrong rank": "values of any shape", "NaN": "NaN, inf and values outside [0, 1] are counted in the invalid slot (documented; no host synchronisation)"}),
    Spec("gmm_crossing", lambda: (W.gmm_crossing, {"pi": torch.tensor([0.6, 0.4]), "mu": torch.tensor([0.2, 0.8]), "var": torch.tensor([0.01, 0.01])}), "mu", "var"),
    Spec("GMMThresholdSearcher.update", lambda: (W.GMMThresholdSearcher(queue_size=2, bins=32).update, {"values": _rand(B, H, H)}), "values",
         not_applicable={"wrong rank": "values of any shape"}),
    Spec("MeanIoU.update", lambda: (W.MeanIoU(C + 1).update, {"pred": _label_map(C + 1), "target": _label_map(C + 1)}), "pred", "target", label_map=("target", C + 1)),
    Spec("mask_absent_classes", lambda: (W.mask_absent_classes, {"seg_logits": _rand(B, C + 1, H, H), "labels": _labels()}), "seg_logits", "labels", "labels"),
    Spec("cam_confidence", lambda: (W.cam_confidence, {"cam": _rand(B, C, H, H), "labels": _labels()}), "cam", "labels", "labels"),
    Spec("cam_to_cpl", lambda: (W.cam_to_cpl, {"cam": _rand(B, C, H, H), "labels": _labels(), "threshold": 0.5}), "cam", "labels", "labels"),
    Spec("cam_to_cpl_dual", lambda: (W.cam_to_cpl_dual, {"cam": _rand(B, C, H, H), "labels": _labels()}), "cam", "labels", "labels"),
    Spec("perplexity", lambda: (W.perplexity, {"confidence": _rand(B, H, H), "threshold": 0.5}), "confidence",
         not_applicable={"wrong rank": "confidence of any shape (element-wise)"}),
    Spec("raw_weights", lambda: (W.raw_weights, {"perplexity": _rand(B, H, H, low=0.5, high=2)}), "perplexity",
         not_applicable={"wrong rank": "perplexity of any shape (element-wise)"}),
    Spec("seg_to_spl", lambda: (W.seg_to_spl, {"seg_logits": _rand(B, C + 1, H, H), "labels": _labels()}), "seg_logits", "labels", "labels"),
    Spec("fuse_cam_saliency", lambda: (W.fuse_cam_saliency, {"cam": _rand(B, C, H, H), "labels": _labels(), "saliency": _rand(B, H, H)}), "cam", "saliency", "labels"),
    Spec("saliency_loss", lambda: (saliency_loss, {"logits": _rand(B, 1, H, H, low=-2, high=2), "target": _rand(B, H, H)}), "logits", "target"),
    Spec("border_prior_saliency", lambda: (W.border_prior_saliency, {"images": _rand(B, 3, 16, 16), "border": 2}), "images"),
    Spec("nonlocal_affinity", lambda: (W.nonlocal_affinity, {"theta": _rand(B, 4, H, H), "phi": _rand(B, 4, H, H)}), "theta", "phi"),
    Spec("propagate", lambda: (W.propagate, {"affinity": torch.softmax(_rand(B, H * H, H * H), -1), "maps": _rand(B, C, H, H)}), "maps", "affinity"),
    Spec("pixel_adaptive_refinement", lambda: (W.pixel_adaptive_refinement, {"images": _rand(B, 3, H, H), "maps": _rand(B, C, H, H), "dilations": (1, 2)}), "maps", "images"),
    Spec("fuse_affinities", lambda: (W.fuse_affinities, {"affinities": [torch.softmax(_rand(B, 16, 16), -1)] * 2, "weights": torch.tensor([0.5, 0.5])}), "affinities"),
    Spec("NonLocalAffinity", lambda: (_module(W.NonLocalAffinity, 4, 2), {"features": _rand(B, 4, H, H)}), "features"),
    Spec("CrossTaskAffinityFusion", _fusion, "affinities"),
    Spec("LargeFOV", lambda: (_module(W.LargeFOV, 8, C + 1, width=8, dilation=2), {"features": _rand(B, 8, H, H)}), "features"),
    Spec("TimmFeatures", _timm("x"), "x"),
    Spec("CAMExtractor", lambda: (_module(W.CAMExtractor, "resnet18", C, pretrained=False), {"x": _rand(B, 3, 32, 32)}), "x"),
    Spec("CoSANet", lambda: (_module(W.CoSANet, C, "resnet18", pretrained=False, decoder_width=8), {"images": _rand(B, 3, 32, 32)}), "images"),
    Spec("EMATeacher.update", _ema_update, "student",
         not_applicable={f: "student is a module" for f in ("wrong rank", "mismatched batch", "labels out of range", "empty batch")},
         custom={"NaN": _nan_parameter, "wrong dtype": _double_student}),
]  # fmt: skip


# ----------------------------------------------------------------------------- faults


def _primary(kw: dict, spec: Spec) -> torch.Tensor:
    v = kw[spec.primary]
    return v[0] if isinstance(v, list) else v


def _set_primary(kw: dict, spec: Spec, t: torch.Tensor) -> str:
    if isinstance(kw[spec.primary], list):
        kw[spec.primary] = [t, *kw[spec.primary][1:]]
        return f"{spec.primary}[0]"
    kw[spec.primary] = t
    return spec.primary


def _wrong_rank(spec, fn, kw):
    t = _primary(kw, spec)
    name = _set_primary(kw, spec, t[0] if t.dim() > 1 else t[None, None])
    return name, f"{name} with one dimension {'fewer' if t.dim() > 1 else 'more'}"


def _mismatched_batch(spec, fn, kw):
    if spec.partner is None:
        return None
    t = kw[spec.partner]
    kw[spec.partner] = t[:1] if t.shape[0] > 1 else t.repeat(2, *[1] * (t.dim() - 1))
    return spec.partner, f"{spec.partner} with another batch size"


def _labels_out_of_range(spec, fn, kw):
    if spec.labels is not None:
        kw[spec.labels] = kw[spec.labels] * 2  # multi-hot with a 2
        return spec.labels, f"{spec.labels} with a value 2 (multi-hot)"
    if spec.label_map is not None:
        name, k = spec.label_map
        kw[name] = kw[name].clone()
        kw[name].view(-1)[0] = k + 5
        return name, f"{name} with class {k + 5} of {k}"
    return None


def _nan(spec, fn, kw):
    t = _primary(kw, spec)
    if not t.is_floating_point():
        return None
    t = t.clone()
    t.view(-1)[0] = float("nan")
    name = _set_primary(kw, spec, t)
    return name, f"{name} with a NaN"


def _wrong_dtype(spec, fn, kw):
    t = _primary(kw, spec)
    t = (t * 255).to(torch.uint8) if t.is_floating_point() else t.float()
    name = _set_primary(kw, spec, t)
    return name, f"{name} as {t.dtype}"


def _batch_sized(name: str, v: Any, spec: Spec) -> bool:
    roles = {spec.primary, spec.partner, spec.labels, spec.label_map and spec.label_map[0]}
    return name in roles or (isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[0] == B)


def _empty(spec, fn, kw):
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = [t[:0] for t in v]
        elif isinstance(v, torch.Tensor) and v.dim() > 0 and _batch_sized(k, v, spec):
            kw[k] = v[:0]
    return spec.primary, "batch of 0 samples"


def _meta(spec, fn, kw):
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            kw[k] = v.to("meta")
        elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            kw[k] = [t.to("meta") for t in v]
        elif isinstance(v, torch.nn.Module):
            v.to("meta")
    owner = getattr(fn, "__self__", None)
    for m in (fn, owner, *getattr(fn, "meta_modules", ())):
        if isinstance(m, torch.nn.Module):
            m.to("meta")
    return spec.primary, "inputs (and module) on the meta device"


FAULTS: dict[str, Callable] = {
    "wrong rank": _wrong_rank,
    "mismatched batch": _mismatched_batch,
    "labels out of range": _labels_out_of_range,
    "NaN": _nan,
    "wrong dtype": _wrong_dtype,
    "empty batch": _empty,
    "meta tensors": _meta,
}


@dataclass
class Outcome:
    spec: str
    fault: str
    argument: str | None
    inputs: str
    raised: str | None  # exception type name
    message: str  # first line of the message, or a description of the result
    finite: bool | None  # the result's values are finite (None: no values / raised)


def _describe(result: Any) -> tuple[str, bool | None]:
    tensors = []
    if isinstance(result, torch.Tensor):
        tensors = [result]
    elif isinstance(result, tuple | list):
        tensors = [t for t in result if isinstance(t, torch.Tensor)]
    elif result is None:
        return "returns None", None
    if not tensors:
        return f"returns {type(result).__name__}", None
    t = tensors[0]
    if t.device.type == "meta":
        return f"returns a meta tensor of shape {tuple(t.shape)}", None
    finite = all(bool(torch.isfinite(x).all()) for x in tensors if x.is_floating_point())
    if t.dim() == 0:
        return f"returns {float(t):.4g}", finite
    return f"returns shape {tuple(t.shape)}{'' if finite else ' with NaN/inf'}", finite


def run_case(spec: Spec, fault: str) -> Outcome | None:
    """Apply one fault to one spec and record what happens (None: not applicable)."""
    if fault in spec.not_applicable:
        return None
    fn, kw = spec.build()
    if fault in spec.custom:
        applied = spec.custom[fault](fn, kw)
    else:
        applied = FAULTS[fault](spec, fn, kw)
    if applied is None:
        return None
    argument, inputs = applied
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fn(**kw)
        except Exception as e:  # noqa: BLE001 - the outcome is what we record
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Outcome(spec.name, fault, argument, inputs, type(e).__name__, msg, None)
    message, finite = _describe(result)
    return Outcome(spec.name, fault, argument, inputs, None, message, finite)


def all_outcomes() -> list[Outcome]:
    return [o for s in SPECS for f in FAULTS if (o := run_case(s, f)) is not None]


TRAINER_FAULTS: list[tuple[str, str, str]] = [
    # (fault, what the CoSA trainer does, the test that checks it)
    ("SIGINT / SIGTERM", "finishes the step, writes the checkpoint atomically, prints the resume command, exits 128 + signal; resumed, bit-for-bit", "tests/examples/test_cosa_faults.py::test_a_signal_finishes_the_step_saves_and_resumes_bit_for_bit"),
    ("SIGTERM to torchrun (2 processes)", "every rank stops after the same step; one checkpoint; `--resume` continues", "tests/examples/test_cosa_distributed.py::test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_a_checkpoint"),
    ("kill -9 during a save", "the previous checkpoint survives (write to `.tmp`, fsync, rename)", "tests/training/test_checkpoints.py::test_kill_9_during_saves_never_leaves_the_run_without_a_loadable_checkpoint"),
    ("a full disk during a save", "`OSError` naming the file and the free space; the partial `.tmp` removed, the previous checkpoint kept", "tests/training/test_checkpoints.py::test_a_full_disk_is_named_and_the_previous_checkpoint_kept"),
    ("`--resume` without a checkpoint, or only a partial `.tmp`", "one-line error naming the file (and the partial save)", "tests/examples/test_cosa_faults.py::test_resume_without_a_checkpoint_or_from_a_damaged_one_says_so"),
    ("`--resume` from a truncated or corrupt checkpoint", "one-line error naming the file", "tests/examples/test_cosa_faults.py::test_resume_without_a_checkpoint_or_from_a_damaged_one_says_so"),
    ("`--resume` with a changed training setting", "error naming the key, before anything is overwritten; evaluation settings may change (printed)", "tests/examples/test_cosa_faults.py::test_resume_refuses_a_changed_training_setting_before_overwriting_anything"),
    ("`--resume` at another world size", "continues, prints the new batch per step and that shards and streams are new", "tests/examples/test_cosa_distributed.py::test_resuming_at_another_world_size_continues_and_says_what_changed"),
    ("`--resume` at the same world size (2 processes)", "bit-for-bit equal to the uninterrupted run", "tests/examples/test_cosa_distributed.py::test_a_run_resumed_at_step_10_equals_the_uninterrupted_one_bit_for_bit"),
    ("non-finite loss", "step skipped (no update) and counted; `train.max_nonfinite_steps` in a row stop the run, last checkpoint kept", "tests/examples/test_cosa_faults.py::test_non_finite_losses_are_skipped_then_stop_the_run"),
    ("non-finite loss, decided on the device (CUDA: no host read)", "step skipped through fused AdamW's `found_inf`, teacher kept; counted when the loss log is read, K in a row stop there; same weights as the host-side skip", "tests/training/test_loop.py::test_the_device_side_skip_is_the_host_side_skip"),
    ("bad config values (`train.iterations=abc`, `eval.interval=0`, `train.lr=-0.001`, warm-up > run, negative weight, `ema_momentum=1.0`)", "one-line `error:` naming the key, exit 2, before any work", "tests/examples/test_cosa_faults.py::test_bad_values_are_one_line_errors_naming_the_key"),
    ("second run on a live run's output_dir; stale lock; unwritable folder", "error naming the folder / the lock taken over with a warning / error naming the folder", "tests/examples/test_cosa_faults.py::test_output_dir_lock_and_writability"),
    ("output_dir that cannot be created", "one-line error naming it", "tests/examples/test_cosa_faults.py::test_an_output_dir_that_cannot_be_created_is_named"),
]  # fmt: skip


def markdown(outcomes: list[Outcome]) -> str:
    lines = ["| callable | fault | input | outcome |", "|---|---|---|---|"]
    for o in outcomes:
        what = f"{o.raised}: {o.message}" if o.raised else o.message
        what = what.replace("|", "\\|")
        if len(what) > 150:
            what = what[:147] + "..."
        lines.append(f"| `{o.spec}` | {o.fault} | {o.inputs} | {what} |")
    return "\n".join(lines) + "\n"


def document(outcomes: list[Outcome]) -> str:
    """The text of ``docs/reliability.md``."""
    skipped = [f"- `{s.name}`, {fault}: {why}" for s in SPECS for fault, why in s.not_applicable.items()]
    trainer = ["| fault | what happens | checked by |", "|---|---|---|"]
    trainer += [f"| {f} | {what} | `{test.split('::')[1]}` |" for f, what, test in TRAINER_FAULTS]
    return "\n".join([
        "# Reliability: every fault and bad input tried, and what it gets",
        "",
        "Generated by `python tests/reliability/cases.py > docs/reliability.md` from the",
        "cases the tests run (`tests/reliability/`); a test fails when this file and the",
        "library disagree. Data checks (finite, range, label values) are on here, as they",
        "are by default and in CPU training; `wsss_blocks.set_data_checks(False)` (the",
        "trainer on CUDA) skips them, and then NaN and out-of-range values are not caught.",
        "",
        "## The trainer (CoSA example; the AuxSegNet example shares the loop)",
        "",
        *trainer,
        "",
        f"## The library's public callables ({len(SPECS)} entry points, {len(FAULTS)} faults)",
        "",
        "Inputs: a valid call (batch 2, 3 classes, 8 x 8 maps) with one fault applied.",
        "",
        markdown(outcomes).rstrip("\n"),
        "",
        "Not applicable:",
        "",
        *skipped,
        "",
    ])


if __name__ == "__main__":
    sys.stdout.write(document(all_outcomes()))
