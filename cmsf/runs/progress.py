"""How the library reports while it works, without printing: a :data:`Progress` callable wraps a
loop, a :data:`Log` callable takes a line; :func:`no_progress` and :func:`no_log` report nothing
and are the defaults. The command line passes its own (a tqdm bar or periodic lines on stderr).

A room of its own (not :mod:`cmsf.runs.evaluate`'s): the low-level writers (:mod:`cmsf.runs.outputs`) take a
``progress`` too and must not import the dataset run.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class SizedIterable(Protocol[T_co]):
    """What a :data:`Progress` is given: items it can count (``len``) and iterate once (a list, a
    range, or an iterator that knows its length)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[T_co]: ...


Progress = Callable[[SizedIterable[T], str, str], Iterable[T]]
"""``progress(items, description, unit)`` yields ``items``, reporting progress as it goes
(``description``: what is done, e.g. a pipeline's name; ``unit``: what an item is, e.g. ``"video"``)."""

Log = Callable[[str], None]
"""``log(message)`` reports one line."""


def no_progress(items: SizedIterable[T], description: str, unit: str) -> Iterator[T]:
    """A :data:`Progress` that reports nothing."""
    return iter(items)


def no_log(message: str) -> None:
    """A :data:`Log` that reports nothing."""
