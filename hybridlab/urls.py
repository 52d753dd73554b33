"""Storage URLs: mask passwords before anything is printed or written."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@]*):(?P<password>.*)@(?=[^@]*$)")


def mask_password(url: str) -> str:
    """`postgresql://bob:secret@host/db` -> `postgresql://bob:***@host/db`; other text unchanged."""
    if not isinstance(url, str):
        return url
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def mask_in_text(text: str, url: str | None) -> str:
    """Remove a URL's password wherever it appears in `text` (e.g. a driver's error message)."""
    match = _USERINFO.match(url or "")
    if match and match["password"]:
        text = text.replace(match["password"], "***")
    return text
