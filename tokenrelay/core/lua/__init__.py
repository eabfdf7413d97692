"""The store's Lua scripts, one `.lua` file each; the shared prelude is prepended as they load.

A shebang line (`#!lua flags=...`) must stay first in the text Redis gets, so the prelude goes after it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

PRELUDE = "_prelude"
SCRIPTS = ("cancel", "start", "finish", "claim_lost", "renew", "untrack", "submit")


def _read(name: str) -> str:
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@cache
def load_script(name: str) -> str:
    """The text of script `name`, ready for SCRIPT LOAD / EVAL."""
    if name not in SCRIPTS:
        raise ValueError(f"no Lua script named {name!r}")
    body, prelude = _read(name), _read(PRELUDE)
    if body.startswith("#!"):
        shebang, _, rest = body.partition("\n")
        return f"{shebang}\n{prelude}\n{rest}"
    return f"{prelude}\n{body}"
