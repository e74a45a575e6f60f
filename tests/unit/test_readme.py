"""The README stays true: every setting is documented, and the documented commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from detector.config import OPTIONS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented: set[str] = set()
    # Rows of the table start with one setting, or several separated by commas.
    for row in re.findall(r"^\| ((?:`[a-z_0-9]+`(?:, )?)+) \|", README, re.M):
        documented |= set(re.findall(r"`([a-z_0-9]+)`", row))
    assert {o.key for o in OPTIONS} <= documented, {o.key for o in OPTIONS} - documented


def test_make_targets_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    for target in set(re.findall(r"(?:^|`)make ([a-z-]+)", README, re.M)):
        assert target in targets, target
