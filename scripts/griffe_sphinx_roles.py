"""A Griffe extension for the documentation site: Sphinx roles as inline code.

h5pool's docstrings name other objects the Sphinx way (``:class:`~h5pool.HandlePool```),
which mkdocstrings would print as it is.  This turns each role into inline code
of the name a reader sees (``HandlePool`` for a ``~`` target, the whole path
otherwise), so the docstrings stay readable in both a terminal and the site.
Loaded by ``mkdocs.yml`` (``extensions:``) when the site is built.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
