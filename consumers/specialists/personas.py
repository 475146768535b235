"""The five specialist personas: versioned system prompts shipped as package data.

Each persona is a markdown file under ``consumers/specialists/personas/`` whose first line is a
header such as ``<!-- persona: backend; version: 1 -->``; the rest of the file is the system
prompt the Claude backend sends as its cached system block. Bump ``version`` whenever the text
changes in a way a reader of recorded answers should know about; ``sha256`` identifies the exact
text either way.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from switchboard.core.settings import SPECIALISTS  # the one list of specialists

_PACKAGE = __name__.rpartition(".")[0]

_HEADER = re.compile(
    r"\A<!--\s*persona:\s*(?P<name>[a-z]+)\s*;\s*version:\s*(?P<version>\d+)\s*-->[ \t]*\r?\n"
)


class PersonaFormatError(ValueError):
    """Raised when a persona file lacks its header, names another persona, or has no prompt."""


@dataclass(frozen=True)
class Persona:
    """One specialist's system prompt, with the version and digest recorded beside answers."""

    name: str
    version: int
    system_prompt: str
    sha256: str


def unknown_specialist(name: str) -> KeyError:
    """The error for a name outside SPECIALISTS, listing the valid ones."""
    return KeyError(f"unknown specialist {name!r}; valid specialists: {', '.join(SPECIALISTS)}")


def parse_persona(name: str, text: str) -> Persona:
    """Parse a persona file's text; the header must name ``name`` and give a version."""
    header = _HEADER.match(text)
    if header is None:
        raise PersonaFormatError(
            f"persona {name!r}: first line must be '<!-- persona: {name}; version: N -->'"
        )
    if header["name"] != name:
        raise PersonaFormatError(
            f"persona file for {name!r} declares persona {header['name']!r} in its header"
        )
    system_prompt = text[header.end() :].strip() + "\n"
    if len(system_prompt) < 200:
        raise PersonaFormatError(f"persona {name!r}: system prompt is missing or too short")
    return Persona(
        name=name,
        version=int(header["version"]),
        system_prompt=system_prompt,
        sha256=hashlib.sha256(system_prompt.encode("utf-8")).hexdigest(),
    )


@functools.cache
def load_persona(name: str) -> Persona:
    """Load a specialist's persona from package data (cached per process).

    Raises ``KeyError`` for a name not in ``SPECIALISTS``, and ``PersonaFormatError`` when the
    shipped file is malformed.
    """
    if name not in SPECIALISTS:
        raise unknown_specialist(name)
    # importlib.resources, not a path next to __file__: works from a wheel or a zip as well.
    source = resources.files(_PACKAGE).joinpath("personas", f"{name}.md")
    return parse_persona(name, source.read_text(encoding="utf-8"))
