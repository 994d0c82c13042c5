"""Convert COCO 2014 instance annotations to the WSSS layout (class-index PNG masks).

    pip install 'wsss-blocks[coco]'          # pycocotools
    python scripts/coco_to_wsss.py --annotations /data/coco/annotations --root /data/coco

Writes ``<root>/SegmentationClass/{train,val}2014/<name>.png`` (0 background, 1..80
the classes in category-id order, 255 crowd regions) and ``<root>/{train,val}.txt``
from ``instances_{train,val}2014.json``, the layout
``wsss_blocks.data.COCOSegmentation`` and the ``coco_vit_b16.yaml`` config read. The
images stay where they are: ``<root>/train2014``, ``<root>/val2014``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss_blocks.data import coco_instances_to_masks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotations", required=True, type=Path,
                        help="folder with instances_train2014.json / instances_val2014.json")
    parser.add_argument("--root", required=True, type=Path, help="the COCO folder to write into")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=("train", "val"))
    args = parser.parse_args(argv)
    for split in args.splits:
        names = coco_instances_to_masks(
            args.annotations / f"instances_{split}2014.json", args.root, split
        )
        print(f"{split}: {len(names)} masks in {args.root / 'SegmentationClass' / f'{split}2014'}")


if __name__ == "__main__":
    main()
