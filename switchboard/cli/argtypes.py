"""argparse types shared by every command. Each error is one line that says what to change.

argparse prints an ``ArgumentTypeError``'s message after ``argument --flag:``, so the messages
name the value, not the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from typing import TypeVar

from switchboard.core.errors import ConfigError

T = TypeVar("T")


def positive_number(unit: str, *, hint: str | None = None) -> Callable[[str], float]:
    """A number above 0 (``unit`` completes "is not a number of ..."); ``hint`` follows the
    "must be more than 0" error in parentheses."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not value > 0:  # written so, NaN is refused too
            suffix = f" ({hint})" if hint else ""
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0{suffix}")
        return value

    return parse


def whole_number(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number from ``minimum`` (to ``maximum``, when one is given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if maximum is None and value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {minimum} to {maximum}")
        return value

    return parse


def one_of(what: str, choices: Collection[str]) -> Callable[[str], str]:
    """One of ``choices``; ``what`` names one, with its article ("a specialist")."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {what}: use one of {', '.join(choices)}"
            )
        return text

    return parse


def subset_of(what: str, choices: Collection[str]) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of ``choices``, in the order given, each once; ``what`` names one
    ("specialist")."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or repr(text)} is not a {what} list: use a "
                f"comma-separated subset of {','.join(choices)}"
            )
        return names

    return parse


def non_empty(text: str) -> str:
    """A value with something in it besides spaces, stripped."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value matches nothing: give a value")
    return text.strip()


def parsed_by(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse``, with its ``ConfigError`` turned into argparse's one-line error."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


#: ``--wait``, ``--deadline`` and the like.
seconds = positive_number("seconds")
#: ``--limit N`` and the like: 1 or more.
count = whole_number(1)
