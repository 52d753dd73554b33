"""ClassificationModule / TrainRecipe / train_and_evaluate on tiny CPU runs (synthetic data, seeded)."""

from __future__ import annotations

import fnmatch
import math

import lightning as L
import pytest
import torch
import torch.nn as nn

from hybridlab.errors import ConfigError, HybridlabError
from studies.data import make_datamodule
from studies.training import (
    ClassificationModule,
    NonFiniteLossError,
    TrainRecipe,
    WarmupCosine,
    make_trainer,
    param_groups,
    train_and_evaluate,
)

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore:.*LeafSpec")]


class TinyNet(nn.Module):
    """A timm-style toy: conv + BN + pooled linear head, with a no-weight-decay hook."""

    def __init__(self, in_chans: int = 3, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_chans, width, 3, 2, 1)
        self.norm = nn.BatchNorm2d(width)
        self.pos = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.head = nn.Linear(width, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x)) + self.pos)
        return self.head(x.mean(dim=(2, 3)))


def tiny_data(**overrides):
    options = dict(num_train=192, num_val=96, num_classes=4, img_size=8, batch_size=32, signal=2.0)
    options.update(overrides)
    return make_datamodule("synthetic", **options)


def tiny_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


FAST = {"epochs": 2, "lr": 0.02, "warmup_epochs": 0.5, "weight_decay": 0.01, "label_smoothing": 0.0}


def chance_accuracy(model: nn.Module, dm) -> float:
    dm.setup()
    model.eval()
    with torch.no_grad():
        x, y = dm.val_set.__getitems__(range(len(dm.val_set)))
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


# -- recipe --------------------------------------------------------------------------------------------------------------


def test_recipe_from_dict_validates_and_names_the_key():
    r = TrainRecipe.from_dict({"epochs": 3, "lr": 1, "opt": "LAMB", "precision": 32, "clip_grad": 1.0})
    assert (r.epochs, r.lr, r.opt, r.precision, r.clip_grad) == (3, 1.0, "lamb", "32", 1.0)
    assert TrainRecipe.from_dict(None) == TrainRecipe() and TrainRecipe().threads is None
    assert TrainRecipe.from_dict({"threads": 1}).threads == 1 and TrainRecipe.from_dict({"threads": None}).threads is None
    assert TrainRecipe.from_dict(r.to_dict()) == r
    cases = [({"epoch": 3}, "train.epoch: unknown training setting 'epoch'"),
             ({"lr": -1e-3}, "train.lr: must be > 0.0"),
             ({"lr": "fast"}, "train.lr: must be a finite number"),
             ({"epochs": 2.5}, "train.epochs: must be an integer"),
             ({"opt": "adamx9"}, "train.opt: unknown optimizer 'adamx9'"),
             ({"precision": "fp8"}, "train.precision: must be one of"),
             ({"ema": "yes"}, "train.ema: must be true or false"),
             ({"label_smoothing": 1.5}, "train.label_smoothing: must be <="),
             ({"limit_train_batches": 1.5}, "train.limit_train_batches: must be a count"),
             ({"threads": 0}, "train.threads: must be >= 1"),
             ({"threads": 2.5}, "train.threads: must be an integer"),
             ({"threads": 10**6}, "train.threads: must be <= 4096")]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
            TrainRecipe.from_dict(data)
    with pytest.raises(ConfigError, match="study.train.mixup"):
        TrainRecipe.from_dict({"mixup": -1}, where="study.train")
    with pytest.raises(ConfigError, match="train.warmup_epochs"):
        TrainRecipe(warmup_epochs=-1)


def test_param_groups_skip_bias_norm_and_no_weight_decay():
    model = TinyNet()
    model.no_weight_decay_keywords = lambda: ("head.weight",)
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {"conv.weight"}  # pos: no_weight_decay(), head.weight: keyword, the rest 1-D
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def reference_groups(model: nn.Module, weight_decay: float) -> list[tuple[str, ...]]:
    """The grouping rule the harness has always used, written out by hand: no decay for 1-D params, biases,
    `no_weight_decay()` names (exact or wildcard) and names containing a `no_weight_decay_keywords()` entry."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())() or ())
    keywords = tuple(getattr(model, "no_weight_decay_keywords", lambda: ())() or ())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (p.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, s) for s in skip)
                or any(k in name for k in keywords)):
            no_decay.append(name)
        else:
            decay.append(name)
    return [tuple(no_decay), tuple(decay)]


def named_groups(model: nn.Module, groups: list[dict]) -> list[tuple[tuple[str, ...], float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [(tuple(names[id(p)] for p in g["params"]), g["weight_decay"]) for g in groups]


def test_optimizer_groups_from_timm_match_the_harness_rule():
    from blocks import ModelSpec

    hybrid = ModelSpec.create("C | M A", dim=16, in_dim=8, num_heads=[1, 2], window_size=[4, 4],
                              num_classes=3).build()
    hybrid.no_weight_decay = lambda: {"levels.1.blocks.*.mixer.A_log", "head.weight"}  # wildcard, as timm uses
    tiny = TinyNet()
    tiny.no_weight_decay_keywords = lambda: ("head.weight",)
    frozen = TinyNet()
    frozen.conv.weight.requires_grad_(False)
    for model in (hybrid, tiny, frozen):
        expected = reference_groups(model, 0.05)
        module = ClassificationModule(model, TrainRecipe(weight_decay=0.05, opt="adamw"))
        module.trainer = type("T", (), {"estimated_stepping_batches": 10, "max_epochs": 1})()
        optimizer = module.configure_optimizers()["optimizer"]
        got = named_groups(model, optimizer.param_groups)
        assert got == [(expected[0], 0.0), (expected[1], 0.05)], model.__class__.__name__
        assert named_groups(model, param_groups(model, 0.05)) == got
        assert all(g["initial_lr"] == pytest.approx(module.recipe.lr) for g in optimizer.param_groups)
    assert {"levels.1.blocks.0.mixer.A_log", "head.weight"} <= set(reference_groups(hybrid, 0.05)[0])
    # weight decay 0: one group without decay (the optimizer's arithmetic is the same as two groups at 0)
    assert [wd for _, wd in named_groups(tiny, param_groups(tiny, 0.0))] == [0.0]


def test_warmup_cosine_schedule():
    f = WarmupCosine(total=100, warmup=10, floor=0.01)
    values = [f(s) for s in range(101)]
    assert all(a < b for a, b in zip(values[:10], values[1:11]))  # rises during warm-up
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then only decays
    assert values[100] == pytest.approx(0.01)
    assert WarmupCosine(total=5, warmup=50, floor=0.0)(4) < 1.0  # warm-up clipped to the run


# -- training ------------------------------------------------------------------------------------------------------------------


def test_training_improves_accuracy_and_writes_checkpoints(tmp_path):
    dm = tiny_data()
    model = tiny_model()
    before = chance_accuracy(model, dm)  # leaves the model in eval mode, as a speed measurement would
    result = train_and_evaluate(model, dm, FAST, tmp_path / "run", seed=0)
    assert model.norm.running_mean.abs().sum() > 0  # trained in train mode all the same (BN statistics moved)
    assert result["top1"] > before + 30, (before, result)
    assert result["top1"] >= 75.0 and result["top5"] == pytest.approx(100.0)  # 4 classes: top-5 = top-4
    assert math.isfinite(result["val_loss"]) and result["epochs"] == 2 and result["global_step"] == 12
    assert result["best_top1"] >= result["top1"] - 1e-6
    assert result["last_ckpt"] is None and result["best_ckpt"].endswith("best.ckpt")  # finished: best weights only
    assert (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").is_file()
    assert result["train_time_s"] > 0 and result["resumed_from"] is None and result["stopped_by_time"] is False
    assert result["train_threads"] == torch.get_num_threads()  # threads unset: torch's own default is kept


def test_threads_apply_while_training_and_are_restored(tmp_path):
    seen: list[int] = []

    class ThreadProbe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    target = 1 if before > 1 else 2
    result = train_and_evaluate(tiny_model(), tiny_data(), dict(FAST, epochs=1, threads=target), tmp_path / "a",
                                seed=0, logger=False, callbacks=[ThreadProbe()])
    assert set(seen) == {target} and result["train_threads"] == target
    assert torch.get_num_threads() == before  # restored for whatever runs next (e.g. a speed measurement)


def test_identical_seeded_runs_are_identical(tmp_path):
    results, weights = [], []
    for run in range(2):
        model = tiny_model()
        results.append(train_and_evaluate(model, tiny_data(), FAST, tmp_path / f"r{run}", seed=11))
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for key in ("top1", "top5", "val_loss", "global_step"):
        assert results[0][key] == results[1][key]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    other = tiny_model()
    train_and_evaluate(other, tiny_data(), FAST, tmp_path / "r2", seed=12)  # another seed: other augment/init RNG
    assert not all(torch.equal(weights[0][k], v) for k, v in other.state_dict().items())


class EpochRecorder(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)


def test_resume_from_last_checkpoint_continues_at_saved_epoch(tmp_path):
    root = tmp_path / "trial"
    full = dict(FAST, checkpoints="full")  # a finished run keeps its optimizer state, so it can be extended
    first = train_and_evaluate(tiny_model(), tiny_data(), dict(full, epochs=1), root, seed=0)
    saved = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 6
    recorder = EpochRecorder()
    second = train_and_evaluate(tiny_model(), tiny_data(), dict(full, epochs=3), root, seed=0, resume_from="last",
                                callbacks=[recorder])
    assert recorder.epochs == [1, 2]  # epoch 0 is not trained again
    assert second["epochs"] == 3 and second["global_step"] == 18
    assert second["resumed_from"] == str(root / "last.ckpt")
    assert torch.load(second["last_ckpt"], map_location="cpu", weights_only=False)["epoch"] == 2
    # resuming a finished run trains nothing but still reports validation metrics
    third = train_and_evaluate(tiny_model(), tiny_data(), dict(full, epochs=3), root, seed=0, resume_from="last")
    assert third["global_step"] == 18 and third["top1"] == pytest.approx(second["top1"])
    with pytest.raises(HybridlabError, match="does not exist"):
        train_and_evaluate(tiny_model(), tiny_data(), FAST, root, seed=0, resume_from=tmp_path / "nope.ckpt")


class NaNAfter(nn.Module):
    """Returns NaN logits from the `after`-th forward call in training mode."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.net, self.after, self.calls = TinyNet(), after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def test_nan_loss_stops_with_clear_error(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        train_and_evaluate(NaNAfter(after=8), tiny_data(), FAST, tmp_path, seed=0)
    msg = str(err.value)
    assert "training loss is nan at epoch 1 step 8 (batch 2)" in msg and "\n" not in msg
    assert isinstance(err.value, HybridlabError)


def test_mixup_cutmix_and_ema_paths(tmp_path):
    dm = tiny_data(batch_size=31, drop_last=False)  # odd batches: mixup drops one sample
    model = tiny_model()
    recipe = dict(FAST, epochs=2, mixup=0.8, cutmix=1.0, label_smoothing=0.1, ema=True, ema_decay=0.9, clip_grad=1.0,
                  checkpoints="last")
    result = train_and_evaluate(model, dm, recipe, tmp_path, seed=0)
    assert math.isfinite(result["val_loss"]) and result["top1"] > 40
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=False)
    ema_keys = [k for k in ckpt["state_dict"] if k.startswith("model_ema.module.")]
    assert ema_keys  # the EMA weights are checkpointed, so a resume keeps them
    ema_conv = ckpt["state_dict"]["model_ema.module.conv.weight"]
    assert not torch.equal(ema_conv, model.conv.weight.detach())
    # the reported accuracy is the EMA model's
    ema_model = TinyNet()
    ema_model.load_state_dict({k[len("model_ema.module."):]: v for k, v in ckpt["state_dict"].items() if k in ema_keys})
    assert chance_accuracy(ema_model, dm) == pytest.approx(result["top1"], abs=1e-4)


def test_module_needs_classes_for_mixup_and_uses_ema_for_eval():
    class NoClasses(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="train.mixup"):
        ClassificationModule(NoClasses(), TrainRecipe(mixup=0.2))
    module = ClassificationModule(TinyNet(), TrainRecipe(ema=True))
    assert module.eval_model is module.model_ema.module
    assert not any(p.requires_grad for p in module.model_ema.parameters())
    plain = ClassificationModule(TinyNet(), TrainRecipe())
    assert plain.model_ema is None and plain.eval_model is plain.model


def test_lr_follows_warmup_and_cosine(tmp_path):
    dm = tiny_data()
    recipe = TrainRecipe.from_dict(dict(FAST, epochs=2, warmup_epochs=1.0, min_lr=0.001))
    module = ClassificationModule(tiny_model(), recipe, num_classes=4)
    lrs: list[float] = []

    class LrRecorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.seed_everything(0, workers=True, verbose=False)
    trainer = make_trainer(recipe, tmp_path, callbacks=[LrRecorder()], accelerator="cpu", checkpoint=False)
    trainer.fit(module, datamodule=dm)
    assert len(lrs) == 12
    assert lrs[0] < lrs[5] and max(lrs) == pytest.approx(0.02, rel=0.2)  # 6 warm-up steps
    assert lrs[6:] == sorted(lrs[6:], reverse=True) and lrs[-1] < 0.01
    assert trainer.checkpoint_callback is None and not list(tmp_path.glob("*.ckpt"))


def test_make_trainer_settings(tmp_path):
    recipe = TrainRecipe(epochs=4, clip_grad=2.0, limit_train_batches=3, accumulate_grad_batches=2)
    trainer = make_trainer(recipe, tmp_path / "t", accelerator="cpu", max_time=30)
    assert trainer.max_epochs == 4 and trainer.gradient_clip_val == 2.0 and trainer.limit_train_batches == 3
    assert trainer.accumulate_grad_batches == 2 and trainer.num_sanity_val_steps == 0
    ckpt = trainer.checkpoint_callback
    assert ckpt.dirpath == str(tmp_path / "t") and ckpt.monitor == "val/top1"
    last = trainer.checkpoint_callbacks[1]
    assert last.monitor is None and last.filename == "last" and last.dirpath == ckpt.dirpath
