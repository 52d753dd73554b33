"""Every numeric measurement setting and `bench` flag is finite and in range before anything runs.

An infinite warm-up or 1e20 iterations used to hang `bench` and a study's measurement; NaN slipped
through the `< 0` check; a non-mapping `measure:` section raised a TypeError traceback.
"""

from __future__ import annotations

import math

import pytest
import yaml

from hybridlab.cli import main as cli_main
from hybridlab.errors import ConfigError
from hybridlab.measure.record import LIMITS, MeasureProfile


@pytest.mark.parametrize(
    "text, where",
    [
        ("warmup_s: .inf", "measure.warmup_s"),
        ("warmup_s: .nan", "measure.warmup_s"),
        ("window_s: -.inf", "measure.window_s"),
        ("window_s: 601", "measure.window_s"),
        ("iters: 1.0e+20", "measure.iters"),
        ("iters: 100001", "measure.iters"),
        ("max_iters: .inf", "measure.max_iters"),
        ("repeats: 1001", "measure.repeats"),
        ("repeats: -1", "measure.repeats"),
        ("batch_size: 9223372036854775808", "measure.batch_size"),
        ("batch_size: .nan", "measure.batch_size"),
        ("img_size: 100000", "measure.img_size"),
        ("warmup_iters: 1.0e+9", "measure.warmup_iters"),
        ("threads: 0", "measure.threads"),
        ("seed: -1", "measure.seed"),
        ("num_classes: .inf", "measure.num_classes"),
        ("tf32: 'off'", "measure.tf32"),
        ("channels_last: 'yes'", "measure.channels_last"),
        ("figures: 5", "measure.figures"),
        ("precision: [fp32]", "measure.precision"),
    ],
)
def test_study_measure_section_refuses_extreme_values(text, where):
    with pytest.raises(ConfigError) as err:
        MeasureProfile.from_dict(yaml.safe_load(text))
    assert err.value.where == where
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize("section", [[1, 2], "cpu", 3, None])
def test_non_mapping_measure_section_is_one_line(section):
    with pytest.raises(ConfigError, match="expected a mapping of measurement settings") as err:
        MeasureProfile.from_dict(section)
    assert err.value.where == "measure"


def test_unknown_keys_are_named_together_in_one_line():
    with pytest.raises(ConfigError) as err:
        MeasureProfile.from_dict({"warmup": 1, "batch": 2, "repeats": 3})
    message = str(err.value)
    assert "'warmup'" in message and "'batch'" in message and "\n" not in message


def test_limits_are_inclusive_and_documented_bounds_hold():
    assert LIMITS["warmup_s"][1] == 600 and LIMITS["iters"][1] == 100_000 and LIMITS["repeats"][1] == 1000
    edge = MeasureProfile(warmup_s=600, window_s=0, iters=100_000, repeats=1000, warmup_iters=0).validated()
    assert edge.warmup_s == 600.0 and isinstance(edge.warmup_s, float) and edge.iters == 100_000
    assert all(math.isfinite(lo) and math.isfinite(hi) and lo <= hi for lo, hi in LIMITS.values())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--warmup-s", "inf"], "--warmup-s: expected a finite number, got inf"),
        (["--warmup-s", "nan"], "--warmup-s: expected a finite number, got nan"),
        (["--window-s", "-1"], "--window-s: must be between 0 and 600"),
        (["--iters", "1e20"], "--iters: expected an integer, got '1e20'"),
        (["--iters", "100000000000000000000"], "--iters: must be between 1 and 100000"),
        (["--repeats", "0"], "--repeats: must be between 1 and 1000"),
        (["--batch-size", "-3"], "--batch-size: must be between 1 and 16384"),
        (["--batch-size", "999999999"], "--batch-size: must be between 1 and 16384"),
        (["--threads", "0"], "--threads: must be between 1 and 1024"),
        (["--warmup-iters", "nan"], "--warmup-iters: expected an integer"),
    ],
)
def test_bench_flags_are_checked_before_anything_is_built(flags, message, capsys):
    rc = cli_main(["bench", "C | M A", "--device", "cpu", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert message in err[0], err[0]


def test_measurement_settings_use_the_shared_validation_path():
    """One validator for study files and measurement profiles: the same range check, the same messages."""
    from hybridlab import validate
    from hybridlab.measure import record

    assert not hasattr(record, "_number")
    with pytest.raises(ConfigError) as shared:
        validate.in_range(1001, "measure.repeats", *LIMITS["repeats"], integer=True)
    with pytest.raises(ConfigError) as profile:
        MeasureProfile(repeats=1001).validated()
    assert (shared.value.reason, shared.value.where) == (profile.value.reason, profile.value.where)
    assert validate.in_range(4.0, "x", 1, 8, integer=True) == 4 and validate.in_range(2, "x", 0, 3) == 2.0
    with pytest.raises(ConfigError, match="expected an integer, got 2.5"):
        validate.in_range(2.5, "x", 0, 3, integer=True)
