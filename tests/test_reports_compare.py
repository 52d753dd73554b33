"""reports.comparison: the reference point is checked, baselines stay, mismatched setups are pointed out."""

from __future__ import annotations

import pytest

from hybridlab.cli import main as cli_main
from hybridlab.errors import ConfigError
from reports.comparison import compare
from reports.demo import make_frame, write_study_folder

LATENCY = [{"name": "top1", "direction": "maximize"}, {"name": "latency_ms", "direction": "minimize"}]


def _two(tmp_path, objectives=None, a=None, b=None, **manifest):
    rows = [{"pattern": "C | M", "top1": 70.0, "throughput_img_s": 300.0, "latency_ms": 2.0},
            {"pattern": "C | A", "top1": 75.0, "throughput_img_s": 100.0, "latency_ms": 5.0}]
    write_study_folder(tmp_path, "a", make_frame(rows), objectives, **{**manifest, **(a or {})})
    write_study_folder(tmp_path, "b", make_frame(rows[::-1]), objectives, **{**manifest, **(b or {})})


@pytest.mark.parametrize("given, message", [
    ([0.0, -1.0], r"latency_ms = -1 is not worse than every point .*latency_ms = 5 in study 'a'"),
    ([72.0, 10.0], r"top1 = 72 is not worse than every point .*top1 = 70 in study 'a'"),
    ([0.0, float("inf")], r"values must be finite numbers"),
    ([0.0], r"needs 2 values \(one per objective\), got 1"),
])
def test_reference_point_from_the_manifest_is_checked(tmp_path, given, message):
    _two(tmp_path, LATENCY, reference_point=given)
    with pytest.raises(ConfigError, match=message) as info:
        compare(["a", "b"], results_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_reference_point_on_the_command_line(tmp_path, capsys):
    _two(tmp_path)
    assert cli_main(["compare", "a", "b", "--results-dir", str(tmp_path), "--reference-point", "50,-1"]) == 0
    md = (tmp_path / "compare-a-vs-b" / "compare.md").read_text()
    assert "top1 = 50, throughput_img_s = -1 (given with --reference-point)" in md
    assert cli_main(["compare", "a", "b", "--results-dir", str(tmp_path), "--reference-point", "50,200"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "throughput_img_s = 200 is not worse than every point" in err[0]
    assert cli_main(["compare", "a", "b", "--results-dir", str(tmp_path), "--reference-point", "50,x"]) == 2
    assert "--reference-point" in capsys.readouterr().err


def test_compare_warns_about_different_datasets_and_image_sizes(tmp_path):
    _two(tmp_path, a={"data": {"name": "cifar10"}, "measure": {"img_size": 32}},
         b={"data": {"name": "global_marks"}, "measure": {"img_size": 64}})
    said: list[str] = []
    out = compare(["a", "b"], results_dir=tmp_path, echo=said.append)
    warnings = [s for s in said if s.startswith("warning:")]
    assert warnings == ["warning: the studies used different datasets (a: cifar10, b: global_marks)",
                        "warning: the studies used different image sizes (a: 32, b: 64)"]
    page = (out / "compare.html").read_text()
    assert "different datasets (a: cifar10, b: global_marks)" in page


def test_compare_reads_the_setup_from_the_study_file_and_is_quiet_when_it_matches(tmp_path):
    _two(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name / "study.yaml").write_text("name: x\ndata: {name: global_marks, img_size: 32}\n")
    said: list[str] = []
    compare(["a", "b"], results_dir=tmp_path, echo=said.append)
    assert not [s for s in said if s.startswith("warning:")]
    (tmp_path / "b" / "study.yaml").write_text("name: x\ndata: {name: global_marks, img_size: 48}\n")
    said.clear()
    compare(["a", "b"], results_dir=tmp_path, echo=said.append)
    assert [s for s in said if s.startswith("warning:")] == [
        "warning: the studies used different image sizes (a: 32, b: 48)"]
