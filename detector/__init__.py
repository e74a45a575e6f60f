"""Streaming impossible-travel detection for sign-in events."""

__version__ = "0.1.0"
__all__ = ["__version__"]

# The hot modules that ``make setup`` compiles with mypyc (see detector/native.py), and the variable
# that asks for their sources all the same.
NATIVE_MODULES = (
    "codec",
    "engine",
    "geo",
    "geoindex",
    "geoip",
    "ingest",
    "reorder",
    "rules",
    "sources",
    "state",
    "statecodec",
)
PURE_PYTHON_ENV = "IMPOSSIBLE_TRAVEL_PURE_PYTHON"


def _native_state(here: str) -> tuple[dict[str, str], list[str]]:
    """The compiled file of each hot module that has one, and the hot modules whose compiled file is
    older than their source (or missing while others are there)."""
    import os
    from importlib.machinery import EXTENSION_SUFFIXES

    found = {}
    for name in NATIVE_MODULES:
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(here, name + suffix)
            if os.path.exists(path):
                found[name] = path
                break
    if not found:
        return found, []
    stale = [
        name
        for name in NATIVE_MODULES
        if name not in found
        or os.path.getmtime(found[name]) < os.path.getmtime(os.path.join(here, name + ".py"))
    ]
    return found, stale


def _run_sources_unless_native_is_current() -> None:
    """When the compiled hot modules are older than their sources (an edit since the last ``make
    setup``), or when IMPOSSIBLE_TRAVEL_PURE_PYTHON=1, every one of them is imported from its source:
    never old code, and never half of each (compiled, they call one another directly)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    found, stale = _native_state(here)
    pure = os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")
    if not found or not (pure or stale):
        return
    if stale and not pure:
        import warnings

        warnings.warn(
            f"detector: compiled modules older than their sources ({', '.join(stale)}); running the "
            "sources (`make setup` compiles them again)",
            stacklevel=2,
        )
    from importlib.machinery import ModuleSpec
    from importlib.util import spec_from_file_location
    from typing import Any

    class Sources:
        @staticmethod
        def find_spec(fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
            package, _, name = fullname.rpartition(".")
            if package != __name__ or name not in NATIVE_MODULES:
                return None
            return spec_from_file_location(fullname, os.path.join(here, name + ".py"))

    sys.meta_path.insert(0, Sources)


_run_sources_unless_native_is_current()
