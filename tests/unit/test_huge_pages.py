"""``huge_pages``: pymalloc's arenas in regions the kernel is asked (madvise) to back with 2 MiB pages
(``_speedups.huge_arenas``), each in a fresh interpreter, as the command line sets it up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.model import SPEEDUPS

ROOT = Path(__file__).resolve().parents[2]

# Makes about 100 MiB of small objects (tuples of floats), then reports in which mappings they lie:
# those the kernel marks "hg" (VM_HUGEPAGE, madvise(MADV_HUGEPAGE)) in /proc/self/smaps, and the RSS
# after freeing them and making as many again.
PROBE = """
import json, sys
from detector.app import use_huge_pages
from detector.config import resolve

took = use_huge_pages(resolve({"huge_pages": sys.argv[1]}, environ={}, command="replay"))

def mappings():
    spans, start = [], None
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) > 4:
            start, end = (int(x, 16) for x in head[0].split("-"))
        elif head[0] == "VmFlags:":
            spans.append((start, end, "hg" in head[1:]))
    return spans

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

objects = [(float(i), float(-i)) for i in range(1_000_000)]
spans = mappings()
marked = sum(1 for o in objects[::1000] if any(a <= id(o) < b and hg for a, b, hg in spans))
del objects
before = rss()
objects = [(float(i), float(-i)) for i in range(1_000_000)]
print(json.dumps({"took": took, "marked": marked, "sampled": 1000, "grew": rss() - before}))
"""


def _probe(huge_pages: str) -> dict[str, int]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, huge_pages], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(SPEEDUPS is None, reason="detector/_speedups.c is not built (make setup)")
@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").is_dir(), reason="a kernel without transparent huge pages"
)
def test_the_objects_made_after_it_lie_in_memory_marked_for_huge_pages() -> None:
    on = _probe("true")
    assert on["took"] is True
    # (all but those that took room left in the arenas made before it)
    assert on["marked"] >= 0.95 * on["sampled"]
    # An arena freed is used again (the second million objects takes the first million's place).
    assert on["grew"] < 20 << 20


def test_without_it_they_do_not() -> None:
    off = _probe("false")
    assert off["took"] is False
    assert off["marked"] == 0
