"""Storage URLs: never show a password. Used for every message, manifest, table and report.

`mask_password` hides the password of a URL's user-info and of `?password=`-style query items;
`scrub` does that for every URL inside free text (e.g. a database driver's error) and also removes
secrets we already know of, raw or percent-decoded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

MASK = "***"
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
_QUERY_SECRET_RE = re.compile(r"(?i)([?&;](?:password|passwd|pwd|secret|token)=)([^&;\s'\"<>]*)")


def _userinfo(url: str) -> str | None:
    """The `user:password` part of a URL, if any (before the last '@' of the authority)."""
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        return None  # sqlite:///path, journal:///path: no authority
    end = len(rest)
    for stop in "?#":
        if stop in rest:
            end = min(end, rest.index(stop))
    at = rest.rfind("@", 0, end)
    return rest[:at] if at >= 0 else None


def mask_password(url: str) -> str:
    """`postgresql://bob:secret@host/db` -> `postgresql://bob:***@host/db` (also `?password=...`)."""
    if not isinstance(url, str):
        return url
    userinfo = _userinfo(url)
    if userinfo and ":" in userinfo:
        start = url.index("://") + 3
        user = userinfo.split(":", 1)[0]
        url = f"{url[:start]}{user}:{MASK}@{url[start + len(userinfo) + 1:]}"
    return _QUERY_SECRET_RE.sub(lambda m: m.group(1) + MASK, url)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The password(s) a URL carries, raw and percent-decoded."""
    if not url:
        return ()
    found: list[str] = []
    userinfo = _userinfo(url)
    if userinfo and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [m.group(2) for m in _QUERY_SECRET_RE.finditer(url)]
    out: list[str] = []
    for secret in found:
        for variant in (secret, unquote(secret)):
            if variant and variant not in out:
                out.append(variant)
    return tuple(out)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """Mask every URL in free text, then every known secret long enough to be unambiguous."""
    text = _URL_RE.sub(lambda m: mask_password(m.group(0)), str(text))
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def mask_in_text(text: str, url: str | None) -> str:
    """Remove a URL's password wherever it appears in `text` (e.g. a driver's error message)."""
    return scrub(text, url_secrets(url))
