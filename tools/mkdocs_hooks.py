"""mkdocs hooks for the documentation site (listed under ``hooks:`` in mkdocs.yml).

The docstrings in ``aioproc/`` cross-reference with Sphinx roles
(``:class:`Process```), which read well in ``help()`` and in editors, but which
Markdown renders literally (":class:" followed by the code). This hook drops
the role and keeps the code, on every page mkdocstrings rendered.
"""

from __future__ import annotations

import re
from typing import Any

# A role, then its code; "~a.b.C" (Sphinx's "show only the last part") too.
_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|data|attr|exc|mod|obj|const):(<code>)(?:~(?:\w+\.)*)?"
)


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(r"\1", html)
