"""One self-contained HTML page: inline CSS, images as base64 PNG, every text escaped.

No external resource and no timestamp, so the page opens offline and is identical for identical data.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reports.tables import Table

CSS = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1d1d1f; margin: 0;
       background: #fafafa; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin: 0 0 14px; }
.alert { background: #fff4e5; border-left: 4px solid #e69f00; padding: 8px 12px; margin: 12px 0; }
.summary { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { border: 1px solid #e2e2e2; border-radius: 6px; padding: 8px 14px; min-width: 110px; background: #fcfcfc; }
.card b { display: block; font-size: 20px; }
.card span { color: #666; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e6e6e6; vertical-align: top; }
th { background: #f2f2f2; text-align: left; white-space: nowrap; }
td.r, th.r { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.l { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
table.kv td:first-child { color: #555; white-space: nowrap; }
table.kv td { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
ul.notes { color: #555; font-size: 13px; margin: 4px 0 0; padding-left: 20px; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 14px; overflow-x: auto;
      font-size: 12.5px; line-height: 1.4; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.files { color: #555; font-size: 13px; }
"""


@dataclass
class Page:
    """The report's content, in display order; `render` makes the HTML."""

    title: str
    subtitle: str = ""
    alerts: list[str] = field(default_factory=list)
    cards: list[tuple[str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # base64 PNGs, spliced in after text is scrubbed

    def figure(self, heading: str, png: bytes, caption: str = "", alt: str = "", dpi: int = 150) -> None:
        """A PNG shown at a fixed scale (112 CSS px per inch), so text has the same size in every figure."""
        width = int.from_bytes(png[16:20], "big") if png[:8] == b"\x89PNG\r\n\x1a\n" else 0
        size = f' width="{round(width * 112 / dpi)}"' if width else ""
        self.images.append(base64.b64encode(png).decode("ascii"))
        marker = f"@@IMAGE{len(self.images) - 1}@@"
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.sections.append(f"<h2>{html.escape(heading)}</h2>\n<figure><img{size} alt=\"{html.escape(alt or heading)}\" "
                             f"src=\"data:image/png;base64,{marker}\">{cap}</figure>")

    def table(self, heading: str, table: Table, intro: str = "") -> None:
        text = f"<p>{html.escape(intro)}</p>" if intro else ""
        body = table.to_html() if table.rows else "<p>(none)</p>"
        self.sections.append(f"<h2>{html.escape(heading)}</h2>\n{text}<div class=\"scroll\">{body}</div>")

    def bullets(self, heading: str, items: Sequence[str], first: bool = False) -> None:
        """A list of sentences; `first` puts it before every other section (what a reader must see first)."""
        body = "".join(f"<li>{html.escape(item)}</li>" for item in items)
        self.sections.insert(0 if first else len(self.sections), f"<h2>{html.escape(heading)}</h2>\n<ul>{body}</ul>")

    def mapping(self, heading: str, values: Mapping[str, Any], empty: str = "not recorded") -> None:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_value(v))}</td></tr>"
                       for k, v in _flatten(values))
        body = f'<table class="kv"><tbody>{rows}</tbody></table>' if rows else f"<p>({html.escape(empty)})</p>"
        self.sections.append(f"<h2>{html.escape(heading)}</h2>\n{body}")

    def preformatted(self, heading: str, text: str | None, empty: str) -> None:
        body = f"<pre><code>{html.escape(text)}</code></pre>" if text else f"<p>({html.escape(empty)})</p>"
        self.sections.append(f"<h2>{html.escape(heading)}</h2>\n{body}")

    def files(self, names: Sequence[str]) -> None:
        items = ", ".join(f"<code>{html.escape(n)}</code>" for n in names)
        self.sections.append(f"<h2>Files</h2>\n<p class=\"files\">Written next to this page: {items}.</p>")

    def render(self, scrub: Callable[[str], str] = lambda s: s) -> str:
        """The page; `scrub` (e.g. password masking) runs over all text before the images go in."""
        alerts = "".join(f'<div class="alert">{html.escape(a)}</div>' for a in self.alerts)
        cards = "".join(f"<div class=\"card\"><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>"
                        for k, v in self.cards)
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        body = "\n".join(self.sections)
        page = (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{sub}\n{alerts}\n<div class=\"summary\">{cards}</div>\n"
            f"{body}\n</main>\n</body>\n</html>\n"
        )
        page = scrub(page)
        for i, data in enumerate(self.images):
            page = page.replace(f"@@IMAGE{i}@@", data, 1)
        return page


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key in values:
        value = values[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _flatten(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
