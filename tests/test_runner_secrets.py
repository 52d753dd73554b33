"""A password in a storage URL is never written to any file or printed, however the URL is given."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import fake_train, tiny_raw

import studies.training
from hybridlab.cli import main as cli_main
from hybridlab.urls import mask_password
from studies.storage import StorageError, open_storage

SECRET = "Zq8Pw-unique-77"
ODD = ["Ab1x?Cd2y#Ef3z", "Ab1x Cd2y@Ef3z", "Ab1x'Cd2y/Ef3z", 'Ab1x"Cd2y&Ef3z']


def _files_holding(folder, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["study file", "--set", "--storage", "environment"])
def test_storage_password_is_never_written(tmp_path, monkeypatch, capsys, how) -> None:
    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path / 'db' / 'study.db'}?password={SECRET}"  # SQLite ignores it; we must too
    raw = tiny_raw()
    raw["search_space"]["layout"]["family"] = ["attn_last_half"]
    extra: list[str] = []
    if how == "study file":
        raw["storage"] = url
    elif how == "--set":
        extra = ["--set", f"storage={url}"]
    elif how == "--storage":
        extra = ["--storage", url]
    else:
        monkeypatch.setenv("HYBRIDLAB_STORAGE", url)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    assert cli_main(["run", str(path), "--results-dir", str(results), *extra]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert (results / "tiny" / "study.yaml").is_file() and (results / "tiny" / "manifest.json").is_file()
    assert _files_holding(results, SECRET) == []
    stored = yaml.safe_load((results / "tiny" / "study.yaml").read_text())
    if how in ("study file", "--set"):
        assert stored["storage"].endswith("?password=***")


@pytest.mark.parametrize("password", ODD)
def test_odd_passwords_are_masked_whole(password) -> None:
    url = f"postgresql://bob:{password}@db.example:5432/hl"
    shown = mask_password(url)
    for piece in re.split(r"[^A-Za-z0-9]+", password):
        assert piece not in shown, shown


@pytest.mark.parametrize("password", ODD)
def test_unparsable_url_error_shows_no_fragment_of_the_password(password, capsys) -> None:
    url = f"postgresql://bob:{password}@db.example:notaport/hl"
    with pytest.raises(StorageError) as info:
        open_storage(url)
    text = str(info.value)
    assert "\n" not in text
    for piece in re.split(r"[^A-Za-z0-9]+", password):
        assert piece not in text, text
    code = cli_main(["run", "quickstart", "--storage", url, "--results-dir", "/nonexistent-results"])
    err = capsys.readouterr().err
    assert code == 2
    for piece in re.split(r"[^A-Za-z0-9]+", password):
        assert piece not in err, err
