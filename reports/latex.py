"""LaTeX twins of the report tables (booktabs), built from the same `Table` cells as the Markdown and HTML.

The output needs `\\usepackage{booktabs}` and compiles with pdflatex (UTF-8 input). Every cell is escaped:
LaTeX's special characters, `|`, and in text columns (patterns) also `[`, `]` and `*`, which LaTeX would
otherwise read as options or starred forms after a row break. Intervals keep their plain form,
`63.1 [61.0, 65.2]`. Nothing depends on time or order of dictionaries, so identical data gives identical bytes.
"""

from __future__ import annotations

import re

from reports.tables import Table

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
    "–": "--", "—": "---", "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "α": r"$\alpha$",
    "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$", "−": r"$-$", "·": r"$\cdot$", "→": r"$\to$", "µ": r"$\mu$", "μ": r"$\mu$",
    "…": r"\ldots{}", "\n": " ", "\r": " ", "\t": " ",
}
_TEXT_ONLY = {"[": "{[}", "]": "{]}", "*": "{*}"}


def escape(text: object, text_column: bool = True) -> str:
    """`text` as LaTeX source that prints it. Text columns (patterns, names) escape `[`, `]` and `*` too;
    number columns keep intervals readable and only guard a leading `[` or `*`."""
    table = {**_SPECIAL, **_TEXT_ONLY} if text_column else _SPECIAL
    out = "".join(table.get(ch, ch) for ch in str(text))
    if not text_column and out[:1] in ("[", "*"):
        out = "{}" + out
    return out


def label_slug(text: str) -> str:
    """A `\\label` key: letters, digits and hyphens only."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "table"


def to_latex(table: Table, caption: str = "", label: str = "") -> str:
    """A `table` float with a booktabs `tabular` (\\toprule, \\midrule, \\bottomrule) and the notes below it."""
    if len(table.columns) != len(table.align):
        raise ValueError(f"table has {len(table.columns)} columns but {len(table.align)} alignments")
    spec = "".join("r" if a == "r" else "l" for a in table.align)
    lines = [
        "% Written by hybridlab; needs \\usepackage{booktabs}.",
        "\\begin{table}[htbp]",
        "\\centering",
        "\\small",
    ]
    if caption:
        lines.append(f"\\caption{{{escape(caption)}}}")
    if label:
        lines.append(f"\\label{{tab:{label_slug(label)}}}")
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
              " & ".join(escape(c) for c in table.columns) + " \\\\", "\\midrule"]
    for row in table.rows:
        if len(row) != len(table.columns):
            raise ValueError(f"a row has {len(row)} cells for {len(table.columns)} columns")
        cells = [escape(c, text_column=a != "r") for c, a in zip(row, table.align)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if table.notes:
        lines.append("\\par\\smallskip\\footnotesize")
        lines += [escape(note) + " \\par" for note in table.notes]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"
