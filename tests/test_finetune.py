"""Fine-tuning studies: pretrained weights from a local file loaded into study models (head replaced, other layouts
partly loaded), frozen stages, layer-wise lr decay, the one-line missing-weights error, and `run --check` of the
built-in fine-tuning study. No network: the Hugging Face download is replaced by one that fails."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from hybridlab.errors import HybridlabError
from studies import finetune
from studies.config import load_study_config
from studies.data import make_datamodule
from studies.lightning_module import ClassificationModule
from studies.recipe import TrainRecipe

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:.*LeafSpec")]

# mambavision_t's depths and layout, narrowed for 32 px inputs
TINY = {"dim": 16, "in_dim": 8, "num_heads": [1, 1, 2, 2], "window_size": [8, 8, 4, 2], "stem_stride": 2,
        "drop_path_rate": 0.0}
FIRST_HALF = "C | C*3 | A*4 M*4 | A*2 M*2"


@pytest.fixture(autouse=True)
def _fresh_weights_cache(monkeypatch):
    monkeypatch.setattr(finetune, "_CACHE", {})


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A seeded 1000-class tiny preset-shaped model, saved as a training checkpoint (weights under `state_dict`)."""
    from blocks.presets import preset_spec

    torch.manual_seed(0)
    model = preset_spec("mambavision_t", num_classes=1000, **TINY).build()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "tiny_1k.pth.tar"
    torch.save({"state_dict": state, "epoch": 3}, path)
    return state, path


def _study(path, **model):
    raw = {
        "name": "ft",
        "data": {"name": "synthetic", "num_train": 64, "num_val": 32, "num_classes": 10, "img_size": 32,
                 "batch_size": 16},
        "model": {"preset": "mambavision_t", "pretrained": str(path), **TINY, **model},
        "search_space": {"layout": {"stages": [3, 4], "family": ["attn_last_half", "attn_first_half"]}},
        "train": {"epochs": 1, "layer_decay": 0.75, "freeze_stages": ["stem"]},
        "objectives": ["top1"],
        "sampler": "grid",
    }
    return load_study_config(raw=raw)


@pytest.mark.slow
def test_local_weights_load_into_study_models_with_the_head_replaced(weights):
    state, path = weights
    config = _study(path)
    assert config.pretrained == finetune.Pretrained("mambavision_t", str(path))
    assert config.recipe.layer_decay == 0.75 and config.recipe.freeze_stages == ("stem",)
    by_label = {c.label: c for c in config.space.candidates()}
    official = by_label["attn_last_half"].build()
    attrs = finetune.apply_pretrained(config.pretrained, official, echo=lambda line: None)
    assert official.num_classes == 10 and official.head.weight.shape == (10, 16 * 8)
    total = len([k for k in official.state_dict() if not k.endswith("num_batches_tracked")])
    assert attrs["head_replaced"] is True and attrs["weights_initialised"] == 2  # head weight and bias
    assert attrs["weights_loaded"] == total - 2 and attrs["weights_unused"] == 0
    for key, value in official.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, state[key]), key

    moved = by_label["attn_first_half"]
    assert moved.pattern == FIRST_HALF
    other = moved.build()
    attrs = finetune.apply_pretrained(config.pretrained, other, echo=lambda line: None)
    own = other.state_dict()
    fitting = [k for k in own if k in state and state[k].shape == own[k].shape and not k.endswith("num_batches_tracked")]
    assert attrs["weights_loaded"] == len(fitting) < total - 2  # mixers and attention swapped places
    assert attrs["weights_loaded"] + attrs["weights_initialised"] == total
    assert torch.equal(own["levels.1.blocks.2.conv1.weight"], state["levels.1.blocks.2.conv1.weight"])


@pytest.mark.slow
def test_frozen_stages_get_no_gradient_and_layer_decay_scales_the_lr(weights):
    from blocks.presets import preset_spec

    torch.manual_seed(1)
    model = preset_spec("mambavision_t", num_classes=10, **TINY).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = TrainRecipe(epochs=1, lr=0.01, warmup_epochs=0.0, layer_decay=0.5, freeze_stages=("stem", 1),
                         limit_train_batches=2, limit_val_batches=1)
    module = ClassificationModule(model, recipe)
    modes = []

    class Modes(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            net = pl_module.model
            modes.append((net.patch_embed.training, net.levels[0].training, net.levels[1].training))

    data = make_datamodule("synthetic", num_train=32, num_val=16, num_classes=10, img_size=32, batch_size=16)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Modes()])
    trainer.fit(module, data)
    assert modes == [(False, False, True)] * 2  # frozen norms keep their running statistics
    after = model.state_dict()
    for name, param in model.named_parameters():
        frozen = name.startswith(("patch_embed.", "levels.0."))
        assert param.requires_grad is not frozen, name
        if frozen:
            assert param.grad is None and torch.equal(after[name], before[name]), name
    assert torch.equal(after["patch_embed.conv_down.1.running_mean"], before["patch_embed.conv_down.1.running_mean"])
    assert not torch.equal(after["levels.1.blocks.0.conv1.weight"], before["levels.1.blocks.0.conv1.weight"])

    groups = trainer.optimizers[0].param_groups
    optimized = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) not in optimized for p in model.patch_embed.parameters())
    assert all(id(p) not in optimized for p in model.levels[0].parameters())
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    for g in groups:
        assert g["initial_lr"] == pytest.approx(0.01 * g["lr_scale"])
    # layers, first to last: stem, 16 blocks with a downsample after stages 1-3 (the final norm joins the last
    # block, timm's rule), the head
    layers = 1 + 16 + 3 + 1
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(model.norm.weight)] == scale[id(model.levels[3].blocks[3].norm1.weight)] == 0.5
    assert scale[id(model.levels[3].blocks[2].norm1.weight)] == 0.5**2
    assert scale[id(model.levels[1].blocks[0].conv1.weight)] == pytest.approx(0.5 ** (layers - 1 - 3))


def _offline(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them "
                      "in the cached files.\nCheck your internet connection.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)


def test_missing_weights_stop_the_study_in_one_line(monkeypatch):
    _offline(monkeypatch)
    wanted = finetune.Pretrained("mambavision_t", True)
    with pytest.raises(finetune.WeightsUnavailable) as err:
        finetune.weights_for(wanted, echo=lambda line: None)
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.pretrained: cannot download")
    assert "--set model.pretrained=/path/to/mambavision_tiny_1k.pth.tar" in message

    lines: list[str] = []
    state, tag = finetune.weights_for(finetune.Pretrained("mambavision_t", True, allow_random_init=True), lines.append)
    assert state is None and tag == finetune.RANDOM_INIT
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "random init" in lines[0]
    model = torch.nn.Linear(2, 2)
    assert finetune.apply_pretrained(finetune.Pretrained(None, False), model, echo=lines.append) == {
        "weights_source": "random init", "weights_loaded": 0}


@pytest.mark.parametrize(("model", "expected"), [
    ({"preset": "mambavision_t", "pretrained": 3}, "model.pretrained: must be true, false or the path"),
    ({"pattern": "C | M", "pretrained": True}, "model.pretrained: true needs a model.preset"),
    ({"preset": "mambavision_t", "pretrained": "/no/such/weights.pth"}, "model.pretrained: weights file not found"),
    ({"preset": "mambavision_t", "pretrained": True, "allow_random_init": "yes"}, "model.allow_random_init: must be"),
])
def test_bad_pretrained_settings_are_one_line(model, expected):
    with pytest.raises(HybridlabError) as err:
        finetune.parse_pretrained(model)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_bad_fine_tuning_training_settings_name_the_key(weights):
    _, path = weights
    for train, expected in [
        ({"layer_decay": 1.5}, "train.layer_decay: must be a number in (0, 1]"),
        ({"freeze_stages": [0]}, "train.freeze_stages: stages are numbered from 1"),
        ({"freeze_stages": ["stem", "stem"]}, "train.freeze_stages: 'stem' is listed twice"),
        ({"freeze_stages": [5]}, "train.freeze_stages: stage 5 does not exist (the model has 4 stages)"),
    ]:
        raw = {"name": "ft", "data": {"name": "synthetic", "num_classes": 10, "img_size": 32},
               "model": {"preset": "mambavision_t", "pretrained": str(path), **TINY}, "train": train,
               "objectives": ["top1"], "sampler": "grid"}
        with pytest.raises(HybridlabError) as err:
            load_study_config(raw=raw)
        assert expected in str(err.value), str(err.value)


def test_recipe_without_fine_tuning_keys_hashes_as_before():
    assert "layer_decay" not in TrainRecipe().to_dict() and "freeze_stages" not in TrainRecipe().to_dict()
    recipe = TrainRecipe.from_dict({"layer_decay": 0.8, "freeze_stages": "stem"})
    assert recipe.to_dict()["freeze_stages"] == ["stem"] and TrainRecipe.from_dict(recipe.to_dict()) == recipe
