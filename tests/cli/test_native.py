"""The hot modules compiled with mypyc (detector/native.py): the same results as their sources, and
never a stale build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from detector import NATIVE_MODULES, PURE_PYTHON_ENV, _native_state
from detector.codec import decode_batch
from detector.model import SignIn, utc_text
from detector.traffic import Catalogue, Generator
from tests.cli.test_hostile import hostile_lines
from tests.conftest import IN_CI, ROOT, run_cli

HERE = str(ROOT / "detector")


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    found, stale = _native_state(HERE)
    if not found or stale:
        if IN_CI:
            pytest.fail("`make setup` must compile the hot modules (python -m detector.native build)")
        pytest.skip("the hot modules are not compiled and current: run `make setup`")
    return found


def test_the_hot_modules_are_the_compiled_ones(compiled: dict[str, str]) -> None:
    code = "import detector.{0} as m; print(m.__file__)"
    env = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV}
    for name in ("engine", "rules", "codec"):
        for pure, expected in (("", compiled[name]), ("1", os.path.join(HERE, name + ".py"))):
            res = subprocess.run(
                [sys.executable, "-c", code.format(name)],
                capture_output=True,
                cwd=ROOT,
                env=env | {PURE_PYTHON_ENV: pure},
                check=True,
            )
            assert res.stdout.decode().strip() == expected and not res.stderr
    # The C decoder (detector/_speedups.c) is used with them, and never with the sources.
    code = "import detector.model as m; print(m.SPEEDUPS.__file__ if m.SPEEDUPS else None)"
    for pure, expected in (("", compiled["_speedups"]), ("1", "None")):
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env | {PURE_PYTHON_ENV: pure}
        )
        assert res.stdout.decode().strip() == expected and not res.stderr


def test_compiled_and_pure_python_replay_give_the_same_output(
    tmp_path: Path, real_db: str, compiled: dict[str, str]
) -> None:
    """Traffic with VPN flips, country-level fixes, late and repeated sign-ins, and hostile lines."""
    traffic = Generator(Catalogue.from_database(real_db), seed=5).generate(300, "nuanced", duplicates=0.05)
    good = [orjson.dumps(e) for e in traffic.events]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(good + [raw for _, raw in hostile_lines(traffic.events, 200, seed=5)]) + b"\n")

    def replay(env: dict[str, str], name: str) -> tuple[list[dict[str, object]], bytes, str]:
        out, rej = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-rejects.jsonl"
        res = run_cli(
            "replay", str(src), "--geoip-db", real_db, "--output", str(out), "--rejects", str(rej), env=env
        )
        assert res.returncode == 0, res.stderr
        alerts = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        for alert in alerts:
            del alert["detected_at"]
        summary = res.stderr.decode().strip().splitlines()[-1]
        return alerts, rej.read_bytes(), summary.rsplit(" in ", 1)[0]  # (less its timing)

    native = replay({}, "native")
    pure = replay({PURE_PYTHON_ENV: "1"}, "pure")
    assert len(native[0]) > 50 and native[1].count(b"\n") >= 100
    assert native == pure


def test_a_stale_build_is_never_run(tmp_path: Path, compiled: dict[str, str]) -> None:
    """An edit after the build: every hot module then comes from its source, with a warning."""
    copy = tmp_path / "detector"
    shutil.copytree(HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import detector, detector.engine as e, detector.rules as r; print(e.__file__, r.__file__)"

    def files() -> tuple[list[str], str]:
        env = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV} | {"PYTHONPATH": str(tmp_path)}
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, cwd=tmp_path, env=env, check=True
        )
        return res.stdout.decode().split(), res.stderr.decode()

    names, warned = files()
    assert all(n.endswith(".so") and n.startswith(str(copy)) for n in names) and not warned
    later = time.time() + 5
    os.utime(copy / "rules.py", (later, later))  # edited after the build
    names, warned = files()
    assert names == [str(copy / "engine.py"), str(copy / "rules.py")]  # all of them, not just the edited
    assert "older than their sources (rules)" in warned
    assert set(_native_state(str(copy))[1]) == {"rules"} and len(NATIVE_MODULES) > 5
    # Built again, but a module no longer on the list is left compiled: it is not run either.
    os.utime(copy / "rules.py", (time.time() - 3600,) * 2)
    assert _native_state(str(copy))[1] == []
    leftover = Path(compiled["rules"]).name.replace("rules", "parallel", 1)
    shutil.copy(compiled["rules"], copy / leftover)
    names, warned = files()
    assert names == [str(copy / "engine.py"), str(copy / "rules.py")] and "(parallel)" in warned


def test_a_compiled_replay_imports_no_module_it_does_not_use(
    tmp_path: Path, real_db: str, compiled: dict[str, str]
) -> None:
    """numpy takes about 70 ms to import, a twentieth of a replay of 200,000 sign-ins: only the twins of
    the C pieces, the rare lines the C decoder leaves, and building the record index use it. maxminddb
    takes 40 ms: with the record index (`make geoip` builds it), IPv4 addresses read no record through it.
    OpenSSL (hashlib, hmac: 4 ms) only pseudonymises; tomllib (3 ms) only reads a --config file."""
    traffic = Generator(Catalogue.from_database(real_db), seed=6).generate(300, "nuanced")
    # Written again as log shippers most often write sign-ins (what the C decoder takes; the generator's
    # other spellings of times and addresses go to the Python decoder).
    signins = [e for e in decode_batch([orjson.dumps(e) for e in traffic.events]) if isinstance(e, SignIn)]
    plain = [
        {
            "user": e.user,
            "ip": e.ip,
            "timestamp": utc_text(e.time),
            "event_id": e.event_id,
            "outcome": "success",
        }
        for e in signins
        if e.success and e.vendor_location is None and not e.proxy
    ]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(map(orjson.dumps, plain)) + b"\n")
    code = (
        "import sys; from detector.cli import main; "
        f"code = main(['replay', {str(src)!r}, '--geoip-db', {real_db!r}, '--output', '/dev/null', "
        "'--workers', '2']); "
        "print(code, [m for m in ('numpy', 'maxminddb', '_hashlib', 'tomllib') if m in sys.modules], "
        "'detector.geoip' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV and not k.startswith("DETECTOR_")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert res.stdout.decode().split() == ["0", "[]", "True"], res.stderr.decode()
    assert f"{len(plain):,} events read, 0 rejected".encode() in res.stderr  # (the replay ran, all of it)
