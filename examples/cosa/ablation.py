"""Run the CoSA ablation on MF-Seg and write its table (docs/results.md shows ours).

    python examples/cosa/ablation.py                          # every variant, ~10 min each
    python examples/cosa/ablation.py --variants core,core-SA  # some of them
    python examples/cosa/ablation.py --set threads=1 --set seed=1

Each variant is one of the configs (mostly paper.yaml: every term of Eq. 11) plus a few
``--set`` overrides, trained in ``<output-dir>/<variant>/``. A variant whose
``metrics.json`` exists is not run again, so an interrupted ablation continues where it
stopped. The table (CPL mIoU on train, segmentation mIoU on val, minutes) goes to
``<output-dir>/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not __package__:  # run as a file: the repository root makes `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.cosa import train as cosa_train  # noqa: E402

# "core": the CoSA mechanisms that need no early layer: swapped assignments (EMA teacher
# as AN), RAW weighting and the dynamic threshold (DT). GC = guided CAM (L_s2c).
CORE = ["loss.s2c=0", "loss.cls_early=0", "loss.c2s_early=0", "loss.csc=0"]
# M† one stage deeper: EfficientNet-Lite0 blocks[3] (80 ch) instead of stage 2 (40 ch);
# the last layer is unchanged (blocks[4], block-level index 5).
DEEP_DAGGER = ["model.extra_blocks=true", "model.last_index=5", "model.early_index=4"]
# name -> (description, config file in configs/, overrides). "default" is cosa_ema.yaml,
# the MF-Seg default when this ablation was measured (docs/results.md).
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "paper": ("every term of Eq. 11", "paper.yaml", []),
    "default": ("paper without L_c2s†, CSC and DT (fixed ξ)", "cosa_ema.yaml", []),
    "core": ("SA + RAW + DT, L_cls and L_c2s only", "paper.yaml", CORE),
    "core-SA": ("core without SA (the ON labels itself)", "paper.yaml",
                [*CORE, "train.use_teacher=false"]),
    "core-RAW": ("core without RAW (plain CE)", "paper.yaml", [*CORE, "loss.raw=false"]),
    "core-DT": ("core with a fixed ξ = 0.5", "paper.yaml",
                [*CORE, "threshold.dynamic=false"]),
    "core+GC": ("core + L_s2c", "paper.yaml", [*CORE, "loss.s2c=0.05"]),
    "core+cls†": ("core + L_cls† (trains M†)", "paper.yaml", [*CORE, "loss.cls_early=1"]),
    "core+cls†+c2s†": ("core + L_cls† + L_c2s†", "paper.yaml",
                       [*CORE, "loss.cls_early=1", "loss.c2s_early=0.1"]),
    "core+cls†+CSC": ("core + L_cls† + L_csc", "paper.yaml",
                      [*CORE, "loss.cls_early=1", "loss.csc=0.1"]),
    "paper@blocks3": ("every term of Eq. 11, M† on blocks[3]", "paper.yaml", DEEP_DAGGER),
    "default+CSC@blocks3": ("default + L_csc, M† on blocks[3]", "cosa_ema.yaml",
                         [*DEEP_DAGGER, "loss.csc=0.1"]),
    # One part at a time off the default (multi-scale CPLs, fixed ξ): what its lead over
    # the baseline (default minus SA, RAW, GC and L_cls†) is made of.
    "default-SA": ("default without SA (the ON labels itself)", "cosa_ema.yaml",
                   ["train.use_teacher=false"]),
    "default-RAW": ("default without RAW (plain CE)", "cosa_ema.yaml", ["loss.raw=false"]),
    "default-GC": ("default without L_s2c", "cosa_ema.yaml", ["loss.s2c=0"]),
    "default-cls†": ("default without L_cls† (M† untrained)", "cosa_ema.yaml",
                     ["loss.cls_early=0"]),
    "baseline": ("no SA, RAW, DT, GC, M†, CSC", "baseline.yaml", []),
}  # fmt: skip


def load_variant(name: str, common: list[str] = ()) -> dict:
    """The resolved config of variant ``name``, with the ``common`` overrides applied last."""
    _, config, overrides = VARIANTS[name]
    return cosa_train.load_config(HERE / "configs" / config, [*overrides, *common])


def run_variant(name: str, common: list[str], out_dir: Path) -> dict:
    """Train one variant (unless its metrics.json exists); returns its final metrics."""
    metrics = out_dir / name / "metrics.json"
    if not metrics.is_file():
        cosa_train.train(load_variant(name, [*common, f"output_dir={out_dir / name}"]))
    with open(metrics) as f:
        return json.load(f)["final"]


def table(rows: list[tuple[str, str, dict]]) -> str:
    """Markdown table of the variants' final metrics (percent, minutes)."""
    lines = [
        "| variant | what | CPL mIoU (train) | M† CPL mIoU | seg mIoU (val) | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, r in rows:
        early = r.get("train_cpl_early_miou")
        lines.append(
            f"| {name} | {what} | {100 * r['train_cpl_miou']:.1f} | "
            f"{'–' if early is None else f'{100 * early:.1f}'} | "
            f"{100 * r['val_seg_miou']:.1f} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="all", help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--output-dir", default="runs/ablation")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override applied to every variant (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    out_dir = Path(args.output_dir)
    rows = []
    for name in names:
        what = VARIANTS[name][0]
        print(f"\n=== {name}: {what}")
        rows.append((name, what, run_variant(name, args.set, out_dir)))
        text = table(rows)  # rewritten after each variant: partial results survive a stop
        (out_dir / "ablation.md").write_text(text)
    print("\n" + text + f"\nwritten to {out_dir / 'ablation.md'}")
    return text


if __name__ == "__main__":
    main()
