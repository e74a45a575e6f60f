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
# Modules written in C for the same build (detector/<name>.c), each with a Python twin that does the
# same where it is not built: ``_speedups`` (codec.decode_batch, model.make and make_slotted,
# geoip.SearchTree.find).
C_MODULES = ("_speedups",)
PURE_PYTHON_ENV = "IMPOSSIBLE_TRAVEL_PURE_PYTHON"


def _pure_python_asked() -> bool:
    import os

    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


def _native_state(here: str) -> tuple[dict[str, str], list[str]]:
    """The compiled file of each module of the package that has one, and the modules that are not as
    the last build should have left them: compiled but older than their source, compiled but no longer
    a hot module, or a hot module not compiled while others are."""
    import os
    from importlib.machinery import EXTENSION_SUFFIXES

    found, sources = {}, {}
    for entry in sorted(os.listdir(here)):
        for suffix in EXTENSION_SUFFIXES:
            name = entry[: -len(suffix)]
            for source in (os.path.join(here, name + ".py"), os.path.join(here, name + ".c")):
                if entry.endswith(suffix) and os.path.exists(source):
                    found[name], sources[name] = os.path.join(here, entry), source
    if not found:
        return found, []
    stale = [
        name
        for name in sorted(set(NATIVE_MODULES) | set(C_MODULES) | set(found))
        if name not in found
        or name not in NATIVE_MODULES + C_MODULES
        or os.path.getmtime(found[name]) < os.path.getmtime(sources[name])
    ]
    return found, stale


def _run_sources_unless_native_is_current() -> None:
    """When the compiled hot modules are older than their sources (an edit since the last ``make
    setup``), or when IMPOSSIBLE_TRAVEL_PURE_PYTHON=1, every one of them is imported from its source:
    never old code, and never half of each (compiled, they call one another directly). The C modules
    then cannot be imported at all (their callers do without)."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    found, stale = _native_state(here)
    pure = _pure_python_asked()
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
            if package == __name__ and name in C_MODULES:
                raise ModuleNotFoundError(f"{fullname}: the sources run", name=fullname)
            if package != __name__ or (name not in NATIVE_MODULES and name not in found):
                return None
            return spec_from_file_location(fullname, os.path.join(here, name + ".py"))

    sys.meta_path.insert(0, Sources)


_run_sources_unless_native_is_current()
