"""The built-in fine-tuning and ImageNet recipe studies validate with `run --check` on tiny stand-in image folders,
without weights and without network; missing data is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridlab.cli import main as cli_main
from studies import finetune
from studies.config import load_study_config

STUDIES = Path(__file__).resolve().parents[1] / "studies"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _folder(root: Path, splits: tuple[str, str], classes: tuple[str, ...], size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / "0.jpg")
    return root


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(finetune, "_CACHE", {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_finetune_cifar10_check_passes_without_weights(tmp_path, capsys):
    root = _folder(tmp_path / "cifar", ("train", "test"), CIFAR_CLASSES, (32, 32))
    study = str(STUDIES / "finetune_cifar10.yaml")
    assert cli_main(["run", study, "--check", "--set", f"data.root={root}"]) == 0
    assert "ok (search space of 4 assignments" in capsys.readouterr().out
    config = load_study_config(study, overrides=[f"data.root={root}"])
    assert config.model.num_classes == 10 and config.recipe.layer_decay == 0.75
    assert config.recipe.freeze_stages == ("stem",)
    note = finetune.check_note(config.pretrained)
    assert note.startswith("weights: the official mambavision_t weights") and "will be needed" in note
    assert "--set model.pretrained=/path/to/mambavision_tiny_1k.pth.tar" in note and "random init" in note


@pytest.mark.slow
def test_mambavision_imagenet_check_validates_the_recipe(tmp_path, capsys):
    study = str(STUDIES / "mambavision_imagenet.yaml")
    assert cli_main(["run", study, "--check", "--set", f"data.root={tmp_path / 'absent'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "set data.root to such a folder" in err
    root = _folder(tmp_path / "imagenet", ("train", "val"), ("n01440764", "n01443537"), (40, 48))
    assert cli_main(["run", study, "--check", "--set", f"data.root={root}"]) == 0
    config = load_study_config(study, overrides=[f"data.root={root}"])
    r = config.recipe
    assert (r.opt, r.lr, r.epochs, r.warmup_epochs, r.min_lr, r.clip_grad) == ("lamb", 0.005, 310, 20.0, 5e-6, 5.0)
    assert (r.mixup, r.cutmix, r.label_smoothing, r.ema, r.ema_decay) == (0.8, 1.0, 0.1, True, 0.9998)
    assert config.data["batch_size"] * config.devices * r.accumulate_grad_batches == 4096
    assert config.data["crop_pct"] == 1.0 and config.data["eval_interpolation"] == "bicubic"
    assert config.model.drop_path_rate == 0.2 and config.space.size() == 6


def _tiny_weights(path: Path) -> Path:
    """Weights of the tiny conftest model in its last-half layout, with a 7-class head."""
    import torch

    from blocks.spec import ModelSpec

    torch.manual_seed(0)
    model = ModelSpec.create("C | M A", dim=8, in_dim=8, num_heads=[1, 2], window_size=[4, 4], stem_stride=2,
                             num_classes=7).build()
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_a_fine_tuning_study_records_what_each_trial_loaded(tmp_path, monkeypatch):
    from conftest import fake_train, run, tiny_raw

    import studies.training

    monkeypatch.setattr(studies.training, "train_and_evaluate", fake_train)
    weights = _tiny_weights(tmp_path / "tiny.pth")
    raw = tiny_raw(model__pretrained=str(weights), train__freeze_stages=["stem"], train__layer_decay=0.8)
    study, lines = run(raw, tmp_path / "a")
    attrs = {t.user_attrs["label"]: t.user_attrs for t in study.trials}
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    same = attrs["attn_last_half"]
    assert same["head_replaced"] and same["weights_initialised"] == 2 and same["weights_source"].startswith("file ")
    moved = attrs["attn_first_half"]
    assert moved["weights_loaded"] < same["weights_loaded"]
    assert moved["weights_loaded"] + moved["weights_initialised"] == same["weights_loaded"] + 2
    assert sum("tensors loaded from file tiny.pth" in line for line in lines) == 3

    raw = tiny_raw(model__pretrained=str(tmp_path / "gone.pth"), model__allow_random_init=True)
    study, lines = run(raw, tmp_path / "b")
    assert sum(line.startswith("warning: ") and "random init" in line for line in lines) == 1
    trial = study.trials[0]
    assert trial.user_attrs["weights_source"] == "random init" and trial.user_attrs["fidelity"] != same["fidelity"]


@pytest.mark.slow
def test_unavailable_weights_stop_the_study_in_one_line(tmp_path):
    from conftest import run, tiny_raw

    model = {"preset": "mambavision_t", "pretrained": True, "dim": 8, "in_dim": 8, "num_heads": [1, 1, 1, 1],
             "window_size": [8, 4, 2, 1], "stem_stride": 2}
    raw = tiny_raw(model=model, search_space=None)
    with pytest.raises(finetune.WeightsUnavailable) as err:
        run(raw, tmp_path)
    assert "\n" not in str(err.value) and "--set model.pretrained=/path/to/" in str(err.value)


def test_imagefolder_eval_resize_takes_crop_pct_and_its_own_interpolation(tmp_path):
    from torchvision import transforms as T

    from hybridlab.errors import ConfigError
    from studies.data import make_datamodule

    root = _folder(tmp_path / "images", ("train", "val"), ("a", "b"), (40, 40))

    def eval_resize(**options):
        dm = make_datamodule("imagefolder", root=str(root), img_size=32, **options)
        return next(t for t in dm.transforms(False).transforms if isinstance(t, T.Resize))

    resize = eval_resize(interpolation="random", eval_interpolation="bicubic", crop_pct=0.8)
    assert resize.interpolation == T.InterpolationMode.BICUBIC and resize.size == 40  # 32 / 0.8
    assert eval_resize(interpolation="random").interpolation == T.InterpolationMode.BILINEAR
    with pytest.raises(ConfigError, match="data.eval_interpolation: must be bilinear, bicubic or nearest"):
        eval_resize(eval_interpolation="random")
