from __future__ import annotations

from pathlib import Path

import pytest

from detector.cli import build_parser
from detector.config import OPTIONS, ConfigError, describe, duration, resolve


def test_defaults() -> None:
    s = resolve({}, environ={})
    assert s.max_speed_kmh == 900 and s.min_distance_km == 100 and s.evaluate_failures is False
    assert s.suppress_window == 6 * 3600


def test_some_defaults_differ_by_command() -> None:
    """Replay holds sign-ins for late ones (1 h of event time); ``run`` holds none; a setting overrides
    either."""
    replay, run = resolve({}, environ={}, command="replay"), resolve({}, environ={}, command="run")
    assert (replay.reorder_window, run.reorder_window) == (3600, 0)
    assert resolve({}, environ={"DETECTOR_REORDER_WINDOW": "5m"}, command="replay").reorder_window == 300


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('max_speed_kmh = 700\nmin_distance_km = 50\n[detection]\nsuppress_window = "2h"\n')
    s = resolve({}, environ={}, config_file=str(cfg))
    assert (s.max_speed_kmh, s.min_distance_km, s.suppress_window) == (700, 50, 7200)
    s = resolve({}, environ={"DETECTOR_MAX_SPEED_KMH": "800"}, config_file=str(cfg))
    assert (s.max_speed_kmh, s.min_distance_km) == (800, 50)
    s = resolve({"max_speed_kmh": "1000"}, environ={"DETECTOR_MAX_SPEED_KMH": "800"}, config_file=str(cfg))
    assert s.max_speed_kmh == 1000
    s = resolve({}, environ={"DETECTOR_CONFIG": str(cfg)})
    assert s.max_speed_kmh == 700


@pytest.mark.parametrize(
    ("flags", "environ", "toml", "named"),
    [
        ({"max_speed_kmh": "fast"}, {}, "", "--max-speed-kmh"),
        ({}, {"DETECTOR_MIN_DISTANCE_KM": "-4"}, "", "DETECTOR_MIN_DISTANCE_KM"),
        ({}, {}, "history_size = 0", "history_size (in"),
        ({}, {}, "no_such_thing = 1", "no_such_thing (in"),
        ({}, {"DETECTOR_NO_SUCH": "1"}, "", "DETECTOR_NO_SUCH"),
        ({}, {}, "evaluate_failures = 'perhaps'", "evaluate_failures (in"),
        ({}, {}, "suppress_window = '2 fortnights'", "suppress_window (in"),
        ({}, {}, "this is not toml", "--config"),
    ],
)
def test_invalid_values_are_refused_with_the_name_used(
    tmp_path: Path, flags: dict, environ: dict, toml: str, named: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        resolve(flags, environ=environ, config_file=str(cfg) if toml else None)
    assert str(err.value).startswith(named)


def test_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match="--config: file not found"):
        resolve({}, environ={}, config_file="/nonexistent/x.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("2m", 120),
        ("6h", 21600),
        ("7d", 604800),
        ("250ms", 0.25),
        (30, 30),
        ("1.5h", 5400),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert duration(text) == seconds


def test_settings_are_frozen_and_described() -> None:
    s = resolve({}, environ={})
    with pytest.raises(AttributeError):
        s.max_speed_kmh = 1  # type: ignore[misc]
    assert set(describe(s)) == {o.key for o in OPTIONS}


def test_every_replay_flag_shows_its_environment_twin() -> None:
    parser = build_parser()
    replay = parser._subparsers._group_actions[0].choices["replay"]  # type: ignore[union-attr]
    text = replay.format_help()
    for option in OPTIONS:
        if option.flag in text:
            assert option.env in text
    assert "--max-speed-kmh" in text and "DETECTOR_MAX_SPEED_KMH" in text


def test_settings_are_read_only_values() -> None:
    """Resolved alike, equal (and hashed alike); every option there, with its default; no setting can
    be changed, added or removed afterwards, and none but the options' can be made."""
    from detector.config import Settings

    a, b = resolve({}, environ={}, command="replay"), resolve({}, environ={}, command="replay")
    assert a == b and hash(a) == hash(b) and a != resolve({"workers": 3}, environ={}, command="replay")
    assert all(hasattr(a, o.key) for o in OPTIONS) and repr(a).startswith("Settings(max_speed_kmh=")
    for change in (
        lambda: setattr(a, "workers", 3),
        lambda: setattr(a, "new", 1),
        lambda: delattr(a, "workers"),
    ):
        with pytest.raises(AttributeError, match="read-only"):
            change()
    with pytest.raises(TypeError, match="not settings: nope"):
        Settings(nope=1)
