"""Where account state lives, behind a small interface.

The engine reads and writes whole ``AccountState`` values by account; how they are kept is the store's
business. ``MemoryStore`` keeps them in a dict (simple; about 500 bytes an account). ``CompactStore``
keeps the recently used ones as objects and packs the others into bytes (``statecodec``) behind an
array-based hash index: about 130 bytes an idle account. A durable, partitioned store (changelog-backed)
plugs in behind the same protocol without touching the rules.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice, repeat
from typing import Protocol

from detector.model import SPEEDUPS, AccountState
from detector.statecodec import Locate, newest_of, newest_time, pack_many, unpack, user_of


class StateStore(Protocol):
    def get(self, user: str) -> AccountState | None: ...

    def get_many(self, users: Iterable[str]) -> dict[str, AccountState]:
        """``get`` of each (one call for a batch's accounts, where a call each costs more than the get);
        the accounts without state are left out."""

    def put(self, user: str, state: AccountState) -> None: ...

    def put_many(self, changes: Mapping[str, AccountState]) -> None:
        """``put`` each of a batch's changes (one call, where a call each costs more than the put)."""

    def delete(self, user: str) -> None: ...

    def __len__(self) -> int: ...

    def items(self) -> Iterator[tuple[str, AccountState]]: ...


class WorkingSet(Protocol):
    """A store that an engine may change in place (replay: nothing is ever rolled back)."""

    def working_set(self, users: Iterable[str]) -> dict[str, AccountState]:
        """The store's own dict of account states, holding at least ``users``' (those it has): read and
        written directly until ``settle``."""

    def settle(self) -> None:
        """Whatever the store does after changes (``CompactStore``: pack the least recently used)."""


def _each(get: Callable[[str], AccountState | None], users: Iterable[str]) -> dict[str, AccountState]:
    """``get_many`` through ``get``, an account at a time."""
    found = {}
    for user in users:
        state = get(user)
        if state is not None:
            found[user] = state
    return found


class MemoryStore:
    """Account state in process memory. Lost on restart."""

    def __init__(self) -> None:
        self._states: dict[str, AccountState] = {}

    def get(self, user: str) -> AccountState | None:
        return self._states.get(user)

    def get_many(self, users: Iterable[str]) -> dict[str, AccountState]:
        return _each(self._states.get, users)

    def put(self, user: str, state: AccountState) -> None:
        self._states[user] = state

    def put_many(self, changes: Mapping[str, AccountState]) -> None:
        self._states.update(changes)

    def working_set(self, users: Iterable[str]) -> dict[str, AccountState]:
        return self._states

    def settle(self) -> None:
        pass

    def delete(self, user: str) -> None:
        self._states.pop(user, None)

    def __len__(self) -> int:
        return len(self._states)

    def items(self) -> Iterator[tuple[str, AccountState]]:
        return iter(list(self._states.items()))


class _Index:
    """Open-addressing hash table: a 32-bit fingerprint of the account -> slot, in two flat arrays of
    4-byte integers (at most 70 % full: about 12 bytes an entry), instead of a dict of Python ints (over
    100 bytes an entry). A fingerprint may be shared: the caller checks the slot's account."""

    EMPTY = -1
    GONE = -2

    def __init__(self, capacity: int = 1024) -> None:
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        """Empty tables of ``capacity`` entries, a power of two. (``_grow`` called ``__init__`` again
        for this: compiled, a second ``__init__`` replaced the tables without releasing the old ones,
        16 bytes an account at 10^6 accounts.)"""
        self._marks = array("I", bytes(4 * capacity))
        self._slots = array("i", [self.EMPTY]) * capacity
        self._mask = capacity - 1
        self._used = 0  # live entries and tombstones

    # (Where ``_speedups`` is built, its index_* functions probe the arrays in C: the loops below, their
    # twins, read each entry as a boxed int, about six of them a probe at 10^6 accounts.)

    def find(self, mark: int, matches: object) -> int:
        """The slot stored under ``mark`` for which ``matches(slot)`` holds, or -1."""
        if SPEEDUPS is not None:
            for slot in SPEEDUPS.index_find(self._marks, self._slots, mark):
                if matches(slot):  # type: ignore[operator]
                    return int(slot)
            return -1
        slots, marks, mask = self._slots, self._marks, self._mask
        i = mark & mask
        while True:
            slot = slots[i]
            if slot == -1:
                return -1
            if slot >= 0 and marks[i] == mark and matches(slot):  # type: ignore[operator]
                return slot
            i = (i + 1) & mask

    def remove(self, mark: int, slot: int) -> None:
        if SPEEDUPS is not None:
            SPEEDUPS.index_remove(self._marks, self._slots, mark, slot)
            return
        slots, marks, mask = self._slots, self._marks, self._mask
        i = mark & mask
        while slots[i] != -1:
            if slots[i] == slot and marks[i] == mark:
                slots[i] = self.GONE
                return
            i = (i + 1) & mask

    def add(self, mark: int, slot: int) -> None:
        self.reserve(1)
        if SPEEDUPS is not None:
            if SPEEDUPS.index_add(self._marks, self._slots, mark, slot):
                self._used += 1
            return
        slots, mask = self._slots, self._mask
        i = mark & mask
        while slots[i] >= 0:
            i = (i + 1) & mask
        if slots[i] == -1:
            self._used += 1
        self._marks[i] = mark
        slots[i] = slot

    def add_many(self, keys: list[str], at: list[int]) -> None:
        """``add(_mark(key), slot)`` of each pair."""
        self.reserve(len(keys))
        if SPEEDUPS is not None:
            self._used += SPEEDUPS.index_add_many(self._marks, self._slots, keys, at)
            return
        for key, slot in zip(keys, at, strict=True):
            self.add(_mark(key), slot)

    def reserve(self, more: int) -> None:
        """Room for ``more`` entries without growing (at most 70 % full)."""
        if (self._used + more) * 10 > len(self._slots) * 7:
            self._grow(more)

    def _grow(self, more: int) -> None:
        # From the old arrays straight into the new (a list of the live entries first held a tuple of
        # two ints for each: a million accounts' worth of objects at the peak, for nothing).
        marks, slots = self._marks, self._slots
        live = len(slots) - slots.count(self.EMPTY) - slots.count(self.GONE)
        capacity = len(slots)
        while (live + more) * 10 > capacity * 4:  # room to grow again before the next resize
            capacity *= 2
        self._allocate(capacity)
        if SPEEDUPS is not None:
            SPEEDUPS.index_rehash(marks, slots, self._marks, self._slots)
            self._used = live
            return
        for i, slot in enumerate(slots):
            if slot >= 0:
                self.add(marks[i], slot)


def _mark(user: str) -> int:
    return hash(user) & 0xFFFFFFFF


# Packed, stored and freed together, while their objects are still in the cache.
_PACK_CHUNK = 256


class CompactStore:
    """Recently used accounts as objects (``hot_size`` of them); the others packed (``statecodec``) one
    after another in a single byte arena, found through ``_Index``: about 100 bytes an idle account, where
    a ``bytes`` object each would add 40 more. Packed accounts are located again by address when they
    come back. The arena is compacted when more than half of it is space left by accounts that came back.
    """

    def __init__(self, locate: Locate, hot_size: int = 100_000) -> None:
        self.locate = locate
        self.hot_size = max(1, hot_size)
        self._hot: dict[str, AccountState] = {}
        self._unordered = False  # see put_many
        self._arena = bytearray()
        self._starts = array("Q")  # per slot: where its bytes start in the arena
        self._sizes = array("I")  # per slot: how many (0 = free slot)
        self._free: list[int] = []
        self._garbage = 0  # arena bytes no slot refers to
        self._index = _Index()

    def _blob(self, slot: int) -> bytes:
        start = self._starts[slot]
        return bytes(self._arena[start : start + self._sizes[slot]])

    def _all_hot(self) -> bool:
        """Nothing packed: every account is among the recently used, with no index to look through."""
        return len(self._free) == len(self._sizes)

    def _find_cold(self, user: str) -> int:
        if self._all_hot():
            return -1
        return self._index.find(_mark(user), lambda slot: user_of(self._blob(slot)) == user)

    def _take_cold(self, user: str, slot: int = -1) -> AccountState | None:
        """A packed account's state, out of the arena (its slot, or -1: looked for here); None when it
        is not packed here."""
        if slot < 0:
            slot = self._find_cold(user)
            if slot < 0:
                return None
        blob = self._blob(slot)
        self._drop_cold(user, slot)
        return unpack(blob, self.locate)[1]

    def get(self, user: str) -> AccountState | None:
        state = self._hot.get(user)
        if state is not None:
            return state
        state = self._take_cold(user)
        if state is not None:
            self._warm(user, state)
        return state

    def get_many(self, users: Iterable[str]) -> dict[str, AccountState]:
        if self._all_hot():
            return _each(self._hot.get, users)  # (one lookup an account: ``in`` then ``[]`` took two)
        return _each(self.get, users)

    def put(self, user: str, state: AccountState) -> None:
        hot = self._hot
        if user in hot:
            del hot[user]  # re-inserted at the end: the dict's order is the order of last use
            hot[user] = state
            return
        slot = self._find_cold(user)
        if slot >= 0:
            self._drop_cold(user, slot)
        self._warm(user, state)

    def put_many(self, changes: Mapping[str, AccountState]) -> None:
        hot = self._hot
        if self._all_hot():
            new = len(changes)
            if len(hot) + new > self.hot_size:  # (near the size: count those not held already)
                new = 0
                for user in changes:
                    if user not in hot:
                        new += 1
            if len(hot) + new <= self.hot_size:
                # Nothing packed, room for all: the batch in one dict operation. The accounts it held
                # already keep their place, so the dict's order is no longer the order of last use: it
                # is put right (``_by_recency``) only if packing ever needs it.
                before = len(hot)
                hot.update(changes)
                self._unordered |= len(hot) - before < len(changes)
                return
        for user, state in changes.items():  # (``put``'s common cases inline)
            if user in hot:
                del hot[user]
                hot[user] = state
            elif self._all_hot() and len(hot) < self.hot_size:
                hot[user] = state  # new, nothing packed to look through, room among the hot
            else:
                self.put(user, state)

    def working_set(self, users: Iterable[str]) -> dict[str, AccountState]:
        """The recently used accounts' dict, with ``users`` among them: those packed are unpacked into it,
        and with anything packed (so that the order of use counts) each is moved to its end. Nothing is
        packed until ``settle``, so the dict may hold a batch's new accounts more than ``hot_size``."""
        hot = self._hot
        if self._all_hot():
            self._unordered = True  # the accounts change where they are (see ``put_many``)
            return hot
        if SPEEDUPS is not None:  # the same loop in C, up to each account found packed
            wanted, k = list(users), 0
            while True:
                k, slot = SPEEDUPS.warm(
                    hot,
                    wanted,
                    k,
                    self._index._marks,
                    self._index._slots,
                    self._arena,
                    self._starts,
                    self._sizes,
                )
                if k >= len(wanted):
                    return hot
                state = self._take_cold(wanted[k], slot)
                if state is not None:
                    hot[wanted[k]] = state
                k += 1
        for user in users:
            state = hot.pop(user, None)
            if state is None:
                state = self._take_cold(user)
                if state is None:
                    continue
            hot[user] = state
        return hot

    def settle(self) -> None:
        """Pack the least recently used while more than ``hot_size`` are held as objects, a slice at a
        time: taking them one by one with next(iter()) would walk the holes left at the dict's front again
        and again."""
        hot = self._hot
        while len(hot) > self.hot_size:
            if self._unordered:
                self._by_recency()
            size = max(1, self.hot_size // 8)
            olds, states = list(islice(hot, size)), list(islice(hot.values(), size))
            for k in reversed(range(0, len(olds), _PACK_CHUNK)):  # (from the end: ``del states[k:]``)
                users = olds[k : k + _PACK_CHUNK]
                self._store_cold_many(users, pack_many(users, states[k:]))
                del states[k:]
                for user in users:  # (each leaves the recently used once packed: nothing is lost)
                    del hot[user]

    def delete(self, user: str) -> None:
        if self._hot.pop(user, None) is None:
            slot = self._find_cold(user)
            if slot >= 0:
                self._drop_cold(user, slot)

    def _by_recency(self) -> None:
        """Order the recently used by their newest sign-in (event time), oldest first: what the dict's
        order stands for, after ``put_many`` has updated accounts where they were."""
        hot = self._hot
        ordered = sorted(hot.items(), key=lambda item: newest_time(item[1]))
        hot.clear()  # (the same dict: callers hold it)
        hot.update(ordered)
        self._unordered = False

    def _warm(self, user: str, state: AccountState) -> None:
        self._hot[user] = state
        self.settle()

    def _store_cold_many(self, users: list[str], blobs: list[bytes]) -> None:
        """Store packed states: each in a free slot (the last freed first) or a new one, the blobs appended
        to the arena at once, and indexed."""
        free = self._free
        reused = min(len(free), len(users))
        at = free[len(free) - reused :][::-1]  # (as many pop()s would)
        del free[len(free) - reused :]
        first, added = len(self._sizes), len(users) - reused
        at += range(first, first + added)
        self._starts.extend(repeat(0, added))
        self._sizes.extend(repeat(0, added))
        base = len(self._arena)
        self._arena += b"".join(blobs)
        if SPEEDUPS is not None:
            SPEEDUPS.place_blobs(self._starts, self._sizes, at, blobs, base)
        else:
            for slot, blob in zip(at, blobs, strict=True):
                self._starts[slot], self._sizes[slot] = base, len(blob)
                base += len(blob)
        self._index.add_many(users, at)

    def _drop_cold(self, user: str, slot: int) -> None:
        self._index.remove(_mark(user), slot)
        self._garbage += self._sizes[slot]
        self._sizes[slot] = 0
        self._free.append(slot)
        if self._garbage > len(self._arena) // 2 > 1 << 20:
            self._compact()

    def _compact(self) -> None:
        arena = bytearray()
        for slot, size in enumerate(self._sizes):
            if size:
                start = self._starts[slot]
                self._starts[slot] = len(arena)
                arena += self._arena[start : start + size]
        self._arena, self._garbage = arena, 0

    def put_packed_many(self, records: Iterable[tuple[str, bytes | None]]) -> None:
        """A changelog's records, restored in order: each account's packed state taken as it is (no
        unpacking), None deleting it; of several records of one account, the last counts."""
        last = dict(records)
        for user in last:
            self.delete(user)
        kept = {user: blob for user, blob in last.items() if blob is not None}
        self._store_cold_many(list(kept), list(kept.values()))

    def expire(self, before: float) -> list[str]:
        """Drop the accounts whose newest event is older than ``before``; returns them."""
        gone = [u for u, st in self._hot.items() if newest_time(st) < before]
        for user in gone:
            del self._hot[user]
        for slot, size in enumerate(self._sizes):
            if size:
                blob = self._blob(slot)
                if newest_of(blob) < before:
                    user = user_of(blob)
                    self._drop_cold(user, slot)
                    gone.append(user)
        return gone

    def __len__(self) -> int:
        return len(self._hot) + len(self._sizes) - len(self._free)

    def items(self) -> Iterator[tuple[str, AccountState]]:
        yield from list(self._hot.items())
        for slot, size in enumerate(list(self._sizes)):
            if size:
                yield unpack(self._blob(slot), self.locate)


def share_of_store(accounts: int, share: float) -> int:
    """How many of ``accounts`` ready as objects (``state_cache_size``) a store with ``share`` of the
    accounts keeps: its share of them (in replay, a worker's engine takes more accounts than the main
    process's: split equally, a worker of the benchmark's 10^6 lines held more accounts than it kept,
    and packed and unpacked them all the way through; in the stream, each partition's), and three
    standard deviations more, as a share by hash is uneven (a store just over its size packs an eighth of
    it at a time, and unpacks them again)."""
    expected = accounts * share
    return max(1, round(expected + 3 * math.sqrt(expected * (1 - share))))


class PartitionedStore:
    """Account state split by the partition that owns each account (Kafka's unit of work and of
    ownership): a ``CompactStore`` per partition this process owns. The stream tells it, for every
    account of a batch, which partition it came from (in ``routes``); a partition's accounts are dropped when
    the partition moves to another process, and restored from the changelog when it comes here."""

    def __init__(self, locate: Locate, hot_size: int = 100_000, partitions: int = 1) -> None:
        self.locate = locate
        # Each partition's share of ``hot_size``, with room for the spread of a share by hash: with as
        # many accounts as ``hot_size`` (the setting's default of 100,000 for as many staff), a plain
        # division left about half the partitions a few accounts over their size, packing and
        # unpacking their least recently used all day.
        self.hot_size = share_of_store(hot_size, 1 / max(1, partitions))
        self.parts: dict[int, CompactStore] = {}
        self.routes: dict[str, int] = {}

    def assign(self, partition: int) -> CompactStore:
        if partition not in self.parts:
            self.parts[partition] = CompactStore(self.locate, self.hot_size)
        return self.parts[partition]

    def drop(self, partition: int) -> int:
        store = self.parts.pop(partition, None)
        return len(store) if store is not None else 0

    def get(self, user: str) -> AccountState | None:
        store = self.parts.get(self.routes.get(user, -1))
        return store.get(user) if store is not None else None

    def get_many(self, users: Iterable[str]) -> dict[str, AccountState]:
        """Each partition's accounts in one ``get_many`` of its store (a ``get`` each cost three lookups
        and two calls an account)."""
        routes = self.routes
        by_partition: dict[int, list[str]] = {}
        for user in users:
            partition = routes.get(user, -1)
            group = by_partition.get(partition)
            if group is None:
                group = by_partition[partition] = []
            group.append(user)
        found: dict[str, AccountState] = {}
        for partition, group in by_partition.items():
            store = self.parts.get(partition)
            if store is not None:
                found.update(store.get_many(group))
        return found

    def put(self, user: str, state: AccountState) -> None:
        self.assign(self.routes[user]).put(user, state)

    def put_many(self, changes: Mapping[str, AccountState]) -> None:
        """Each partition's changes in one ``put_many`` of its store: there, a batch of accounts that are
        all held as objects is one dict update (a ``put`` each moved every account to the dict's end)."""
        for partition, group in self._by_partition(changes).items():
            self.assign(partition).put_many(group)

    def changelog(self, changes: Mapping[str, AccountState]) -> dict[int, tuple[list[bytes], list[bytes]]]:
        """A batch's changes as changelog records, by partition: the accounts as keys (UTF-8, surrogates
        kept as they came) and their states packed."""
        return {
            partition: (
                [user.encode("utf-8", "surrogatepass") for user in group],
                pack_many(list(group), list(group.values())),
            )
            for partition, group in self._by_partition(changes).items()
        }

    def _by_partition(self, changes: Mapping[str, AccountState]) -> dict[int, dict[str, AccountState]]:
        routes = self.routes
        out: dict[int, dict[str, AccountState]] = {}
        for user, state in changes.items():
            partition = routes[user]
            group = out.get(partition)
            if group is None:
                group = out[partition] = {}
            group[user] = state
        return out

    def delete(self, user: str) -> None:
        store = self.parts.get(self.routes.get(user, -1))
        if store is not None:
            store.delete(user)

    def expire(self, before: float) -> list[tuple[str, int]]:
        return [(user, p) for p, store in self.parts.items() for user in store.expire(before)]

    def __len__(self) -> int:
        return sum(len(s) for s in self.parts.values())

    def items(self) -> Iterator[tuple[str, AccountState]]:
        for store in list(self.parts.values()):
            yield from store.items()
