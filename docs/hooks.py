"""MkDocs hooks (see ``hooks`` in mkdocs.yml).

The docstrings of ``flame`` use Sphinx roles (``:class:`flame.Future```), which Markdown
renders as the role's name followed by the code: drop the role name, keep the code.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|data|attr|exc|mod|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)
