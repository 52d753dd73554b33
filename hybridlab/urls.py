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
    """The `user:password` part of a URL, if any: everything before the last '@' after `scheme://`.

    A password may hold '?', '#', '/' or '@' that a parser would take for the end of the user-info, so
    the widest reading is the one masked: showing too little of a URL is safe, showing a password is not.
    """
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    if rest.startswith("/"):
        return None  # sqlite:///path, journal:///path: no authority
    at = rest.rfind("@")
    if at < 0:
        return None
    head = rest[:at]
    user = head.split(":", 1)[0]
    if any(c in user for c in "/?#"):
        return None  # the '@' is in the path or the query; the authority has no user-info
    return head


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
    """The password(s) a URL carries, raw and percent-decoded, and their pieces of 4+ characters
    (so a fragment quoted by a parser that stopped at a '?', a quote or a space is masked too)."""
    if not url:
        return ()
    found: list[str] = []
    userinfo = _userinfo(url)
    if userinfo and ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        found += [password, password.split("@", 1)[0]]
    found += [m.group(2) for m in _QUERY_SECRET_RE.finditer(url)]
    out: list[str] = []
    for secret in found:
        for variant in (secret, unquote(secret)):
            for piece in (variant, *re.split(r"[^A-Za-z0-9_\-]+", variant)):
                if piece and piece not in out:
                    out.append(piece)
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
