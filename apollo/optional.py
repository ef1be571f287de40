"""Optional dependencies: each heavy package belongs to the extra of the command that needs it, so
`pip install apollo-restore` (restoring only) stays light, and a missing one is one clear line."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A command needs a package of an extra that is not installed; the message says how to add it."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """`module`, imported, or MissingExtra naming the `pip install` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise MissingExtra(f"{what} needs {package}, which is not installed: "
                           f"pip install \"apollo-restore[{extra}]\"") from err
