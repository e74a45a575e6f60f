"""Where account state lives, behind a small interface.

The engine reads and writes whole ``AccountState`` values by account; how they are kept is the store's
business. ``MemoryStore`` keeps them in a dict. A durable, partitioned store (changelog-backed) plugs in
behind the same protocol without touching the rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from detector.model import AccountState


class StateStore(Protocol):
    def get(self, user: str) -> AccountState | None: ...

    def put(self, user: str, state: AccountState) -> None: ...

    def delete(self, user: str) -> None: ...

    def __len__(self) -> int: ...

    def items(self) -> Iterator[tuple[str, AccountState]]: ...


class MemoryStore:
    """Account state in process memory. Lost on restart."""

    def __init__(self) -> None:
        self._states: dict[str, AccountState] = {}

    def get(self, user: str) -> AccountState | None:
        return self._states.get(user)

    def put(self, user: str, state: AccountState) -> None:
        self._states[user] = state

    def delete(self, user: str) -> None:
        self._states.pop(user, None)

    def __len__(self) -> int:
        return len(self._states)

    def items(self) -> Iterator[tuple[str, AccountState]]:
        return iter(list(self._states.items()))
