"""The sdist must be able to build the extension: every file under csrc/ matches a
pattern of MANIFEST.in (``make dist-check`` builds the sdist and compiles it for real)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_csrc_file_is_in_the_sdist():
    patterns = []
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        words = line.split()
        if words[:2] == ["recursive-include", "csrc"]:
            patterns += words[2:]
    assert patterns, "MANIFEST.in has no recursive-include csrc line"
    files = [p for p in (ROOT / "csrc").rglob("*") if p.is_file()]
    assert files
    missing = [str(p.relative_to(ROOT)) for p in files
               if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]  # fmt: skip
    assert not missing, f"csrc files the sdist would leave out: {missing}"
