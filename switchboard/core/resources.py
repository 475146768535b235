"""Package data as filesystem paths, found through ``importlib.resources``.

Not ``Path(__file__).parents[...]``: that only works in a checkout. Resources come from the
installed package, a wheel as much as an editable install. Callers walk folders with
``pathlib`` (``glob``, ``iterdir``), so the package must be on a filesystem, as a wheel
installed by pip is; a zip import is refused with a message rather than mis-read.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from switchboard.core.errors import ConfigError


def package_data_path(package: str, *parts: str) -> Path:
    """The resolved path of ``parts`` inside ``package``'s data (symlinks followed)."""
    found = resources.files(package).joinpath(*parts)
    if not isinstance(found, Path):
        raise ConfigError(
            f"{package}/{'/'.join(parts)} is not on a filesystem ({type(found).__name__}): "
            "install switchboard with pip, not as a zip"
        )
    return found.resolve()
