"""LaTeX tables: booktabs rules, one cell per column, escaped patterns, plain intervals, identical bytes for
identical data, and (where pdflatex is installed) a document that compiles."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from reports.latex import escape, label_slug, to_latex
from reports.tables import Table


def _table() -> Table:
    return Table(
        columns=["Rank", "Pattern", "Top-1 (%)", "Δ Top-1 (pp)", "Bootstrap 95%"],
        rows=[["1", "[C|M]*2 _x #1 & 50% {y} ~z ^w \\v", "63.10 [61.00, 65.20]", "−1.20 ± 0.40", "[61.00, 65.20]"],
              ["2 (baseline)", "resnet_18", "–", "–", "–"]],
        align=["r", "l", "r", "r", "r"],
        notes=["Figures are mean [95% interval]; α = 0.05, n ≥ 3.", "50% of 10_000 & more"],
    )


def test_escape_special_characters_in_patterns():
    assert escape("[C|M]*2") == r"{[}C\textbar{}M{]}{*}2"
    assert escape("a_b #1 & 50% $x {y} ~ ^ \\") == (
        r"a\_b \#1 \& 50\% \$x \{y\} \textasciitilde{} \textasciicircum{} \textbackslash{}")
    assert escape("α ± Δ – ≥ −1.3") == r"$\alpha$ $\pm$ $\Delta$ -- $\geq$ $-$1.3"


def test_number_cells_keep_plain_intervals_and_guard_a_leading_bracket():
    assert escape("63.1 [61.0, 65.2]", text_column=False) == "63.1 [61.0, 65.2]"
    assert escape("[61.0, 65.2]", text_column=False) == "{}[61.0, 65.2]"


def test_booktabs_structure_and_column_count():
    tex = to_latex(_table(), "demo_study: architectures", "demo_study-architectures")
    lines = tex.splitlines()
    assert lines.count("\\toprule") == lines.count("\\midrule") == lines.count("\\bottomrule") == 1
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert "\\begin{tabular}{rlrrr}" in lines
    assert "\\caption{demo\\_study: architectures}" in lines and "\\label{tab:demo-study-architectures}" in lines
    body = lines[lines.index("\\toprule") + 1: lines.index("\\bottomrule")]
    rows = [line for line in body if line != "\\midrule"]
    assert len(rows) == 3
    for row in rows:
        assert row.endswith(" \\\\")
        # unescaped '&' separate cells: one fewer than the columns
        assert row.replace("\\&", "").count("&") == 4
    assert "63.10 [61.00, 65.20]" in rows[1] and "{}[61.00, 65.20]" in rows[1]
    assert r"{[}C\textbar{}M{]}{*}2 \_x \#1 \& 50\% \{y\}" in rows[1]
    assert "resnet\\_18 & -- & -- & --" in rows[2]
    notes = lines[lines.index("\\par\\smallskip\\footnotesize") + 1: -1]
    assert notes == [r"Figures are mean {[}95\% interval{]}; $\alpha$ = 0.05, n $\geq$ 3. \par",
                     r"50\% of 10\_000 \& more \par"]
    assert lines[-1] == "\\end{table}"


def test_identical_data_gives_identical_bytes_and_rows_must_fit():
    assert to_latex(_table(), "x").encode() == to_latex(_table(), "x").encode()
    bad = _table()
    bad.rows[0] = bad.rows[0][:-1]
    with pytest.raises(ValueError, match="4 cells for 5 columns"):
        to_latex(bad)
    assert label_slug("My Study/v2_a") == "my-study-v2-a"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.subprocess
def test_table_compiles_with_pdflatex(tmp_path):
    doc = ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\begin{document}\n"
           + to_latex(_table(), "demo_study: architectures", "demo") + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc, encoding="utf-8")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_report_writes_tex_twins_of_its_tables_byte_identical(tmp_path):
    from reports.build import build_report
    from reports.demo import write_demo_study

    write_demo_study(tmp_path / "abl", name="abl", ablation=True, n_running=0, n_failed=0)
    out = build_report("abl", results_dir=tmp_path)
    table, ablation = (out / "table.tex").read_text(), (out / "ablation.tex").read_text()
    assert "\\toprule" in table and "\\caption{abl: architectures}" in table
    assert "attn\\_last\\_half (default)" in ablation and "$\\Delta$ Top-1 (pp)" in ablation
    assert "table.tex" in (out / "report.html").read_text()
    again = build_report("abl", results_dir=tmp_path, out=tmp_path / "again")
    for name in ("table.tex", "ablation.tex"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
