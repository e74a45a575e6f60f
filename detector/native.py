"""The hot modules compiled to C with mypyc, in place beside their sources.

Why: the per-sign-in work is many small Python functions over tuples and dicts (decoding, the rule,
GeoIP caching), and the interpreter's cost of calling and dispatching is most of it. mypyc compiles
the very same type-annotated modules (mypy checks them anyway) into C extensions whose calls into one
another are direct C calls: same code, same results (a test replays the same traffic both ways and
compares), less time. Nothing else changes: where the build cannot run (no C compiler, as in the slim
container image) the sources run as they are.

The list (``detector.NATIVE_MODULES``) leaves out the model (its frozen dataclasses must pickle as
they are between replay workers). The state store (``state``) was left out too while, compiled, its
accounts took 202 bytes each against 175-191 interpreted: its index grew by calling ``__init__`` again,
which a compiled class does without releasing the old tables. Growing through ``_allocate`` instead,
it takes 176 B compiled (the memory benchmark, 10^6 accounts), and a replay over 10^6 accounts runs at
0.88 of one over 10^4 (0.70 with the store interpreted, where probing the index for each new account
and adding each packed one was most of the difference).

Beside them, one module written in C (``detector.C_MODULES``), ``_speedups``: it decodes the common
canonical line (an object of plain strings, with numbers, literals or nested values in the fields the
detector does not use) straight into a ``SignIn``, where parsing it into a
dict and checking each field took 15,700 instructions a line (anything else it leaves to
``codec.decode_batch``, which stays the definition of what is valid); it makes the hot path's named
tuples and a new place's ``Location`` and its key (``model.make``, ``model.make_slotted``,
``model.place_key``), walks the GeoIP search tree (``geoip.SearchTree.find``, ``locate_text``), takes
the rule's quick path over a batch (``engine.Engine.process``), packs the common account state
(``statecodec.pack``), packs a replay batch for the worker processes (``parallel._split``), and counts
a batch's outcomes (``engine.Engine.process``). Each
piece has a Python twin, run where it is not built.

``make setup`` runs ``python -m detector.native build``. A compiled module older than its source would
silently run old code after an edit, so ``detector/__init__.py`` then imports every one of them from
source (a warning says so) until the next build; ``IMPOSSIBLE_TRAVEL_PURE_PYTHON=1`` does the same on
purpose. The modules are compiled together (their calls to each other are native), hence all or none.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import shutil
import sys
import time

from detector import C_MODULES, NATIVE_MODULES, _native_state, _pure_python_asked

GROUP = "detector._native"  # the shared library of the group: detector/_native__mypyc.<suffix>
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def compiled() -> dict[str, str]:
    """Each hot module's compiled file, where there is one."""
    return _native_state(HERE)[0]


def _built() -> list[str]:
    """Every file the last build left: the compiled modules and the group's shared library."""
    library = GROUP.rsplit(".", 1)[1] + "__mypyc"
    candidates = [os.path.join(HERE, library + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    return [*compiled().values(), *(path for path in candidates if os.path.exists(path))]


def summary() -> str:
    """What runs: compiled modules, or the sources (and why)."""
    found, old = _native_state(HERE)
    state = (
        "pure Python (asked)"
        if _pure_python_asked()
        else "stale: sources run"
        if old
        else "compiled"
        if found
        else "pure Python"
    )
    return f"{state}; {len(found)} of {len(NATIVE_MODULES) + len(C_MODULES)} modules compiled" + (
        f"; stale: {', '.join(old)}" if old else ""
    )


def clean() -> int:
    """Remove every file the last build left."""
    paths = _built()
    for path in paths:
        os.remove(path)
    return len(paths)


def build() -> int:
    """Compile the hot modules in place; 0 when done, 1 when they could not be (the sources then run)."""
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        print("native: no C compiler found; the detector runs as pure Python", file=sys.stderr)
        clean()
        return 1
    started, begun = time.monotonic(), time.time()
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution, Extension
    except ImportError as exc:
        print(f"native: {exc}; the detector runs as pure Python", file=sys.stderr)
        clean()
        return 1
    clean()  # (a module no longer on the list must not stay compiled)
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypy's settings are pyproject.toml's; the build tree goes to build/
    try:
        sources = [os.path.join("detector", name + ".py") for name in NATIVE_MODULES]
        # (-ffp-contract=off: no multiply-add fused into one rounding, where Python rounds twice; the
        # geodesic and the haversine in C are held equal to Python's, bit for bit)
        flags = ["-O2", "-ffp-contract=off"]
        c_modules = [
            Extension(f"detector.{name}", [os.path.join("detector", name + ".c")], extra_compile_args=flags)
            for name in C_MODULES
        ]
        dist = Distribution(
            {
                "name": "impossible-travel-native",
                "ext_modules": mypycify(sources, group_name=GROUP, opt_level="3") + c_modules,
            }
        )
        dist.script_args = ["--quiet", "build_ext", "--inplace"]
        dist.parse_command_line()
        dist.run_commands()
    except (Exception, SystemExit) as exc:  # a failed compile: the sources run as they are
        print(f"native: the build failed ({exc}); the detector runs as pure Python", file=sys.stderr)
        clean()
        return 1
    finally:
        os.chdir(cwd)
    # Stamped with the time the build began: setuptools copies a module it did not need to rebuild
    # with its old time, which would look stale; a source edited since then does.
    for path in _built():
        os.utime(path, (begun, begun))
    print(
        f"native: {len(compiled())} modules compiled in {time.monotonic() - started:.0f} s", file=sys.stderr
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.native", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["build", "clean", "status"])
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="build only when a module is not compiled or older than its source",
    )
    args = parser.parse_args(argv)
    if args.action == "build":
        found, old = _native_state(HERE)
        if args.if_stale and found and not old:
            return 0
        return build()
    if args.action == "clean":
        print(f"native: {clean()} files removed", file=sys.stderr)
        return 0
    print(f"native: {summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
