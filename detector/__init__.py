"""Streaming impossible-travel detection for sign-in events."""

__version__ = "0.1.0"
__all__ = ["__version__"]
