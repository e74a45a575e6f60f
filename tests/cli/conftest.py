"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

from detector.traffic import Catalogue, Generator, Traffic

CLEAR_SEED = 9  # held out: no other test generates this set


@pytest.fixture(scope="session")
def clear_set(real_db: str) -> Traffic:
    """The labelled clear-cut set (300 accounts) over the real GeoLite2-City database."""
    return Generator(Catalogue.from_database(real_db), seed=CLEAR_SEED).generate(300, "clear")
