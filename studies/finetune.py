"""Fine-tuning studies: start every trial's model from pretrained weights where they fit.

    model:
      preset: mambavision_t
      pattern: "C | C*3 | A*4 M*4 | A*2 M*2"   # optional: another layout at the preset's settings
      pretrained: true               # the official weights (Hugging Face), or a path to a local file
      allow_random_init: true        # weights unavailable: train from random init with a warning

A local file may be an official `.pth.tar`, a training checkpoint or a plain state dict (read with
`weights_only=True`). Each trial loads the tensors whose keys and shapes fit its model and keeps its own
initialisation for the rest: a head for another class count, and the blocks a different layout changes. The trial
records how many tensors were loaded and initialised (`weights_loaded`, `weights_initialised`). The weights
are read once per process. Weights that cannot be had stop the study in one line (or, with `allow_random_init`,
give a warning); `pretrained: false` trains from random init with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridlab.errors import ConfigError, HybridlabError, StudyHalt

PRETRAINED_KEYS = ("pretrained", "allow_random_init")
RANDOM_INIT = "random init"


class WeightsUnavailable(StudyHalt):
    """The pretrained weights cannot be read or downloaded: every trial would fail the same way."""


@dataclass(frozen=True)
class Pretrained:
    """Where a fine-tuning study's weights come from: `source` is True (the preset's official weights), a path,
    or False (random init on purpose)."""

    preset: str | None
    source: bool | str
    allow_random_init: bool = False

    @property
    def file(self) -> str | None:
        return self.source if isinstance(self.source, str) else None

    def describe(self) -> str:
        if self.source is True:
            repo, filename = official_file(self.preset or "")
            return f"the official {self.preset} weights ({repo}/{filename})"
        return f"the weights in {self.source}" if self.file else RANDOM_INIT


def pop_pretrained_keys(cfg: dict[str, Any]) -> None:
    """Remove the fine-tuning keys from a model section (they are no ModelSpec settings)."""
    for key in PRETRAINED_KEYS:
        cfg.pop(key, None)


def parse_pretrained(raw: Any, check_files: bool = True) -> Pretrained | None:
    """The model section's `pretrained` / `allow_random_init` (None when neither is given); one ConfigError line."""
    if not isinstance(raw, Mapping) or not any(key in raw for key in PRETRAINED_KEYS):
        return None
    source = raw.get("pretrained", False)
    allow = raw.get("allow_random_init", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"must be true or false, got {allow!r}", "model.allow_random_init")
    preset = raw.get("preset")
    preset = preset if isinstance(preset, str) else None
    if isinstance(source, bool):
        if source and preset is None:
            raise ConfigError("true needs a model.preset (whose official weights are loaded); for another model "
                              "give the path of a weights file", "model.pretrained")
        if source:
            official_file(preset)  # a preset without published weights: say so now
        return Pretrained(preset, source, allow)
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise ConfigError(f"must be true, false or the path of a weights file, got {source!r}", "model.pretrained")
    path = str(Path(os.fspath(source)).expanduser())
    if check_files and not allow and not Path(path).is_file():
        raise ConfigError(f"weights file not found: {path} (or set model.allow_random_init: true to train from "
                          "random init without it)", "model.pretrained")
    return Pretrained(preset, path, allow)


def official_file(preset: str) -> tuple[str, str]:
    """The Hugging Face repo and file of a preset's default pretrained tag."""
    from blocks.presets import HF_WEIGHTS, PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})", "model.preset")
    tags = [tag for tag in HF_WEIGHTS if tag.split(".")[0] == preset]
    if not tags:
        raise ConfigError(f"{preset} has no published weights; give the path of a weights file", "model.pretrained")
    preferred = [tag for tag in tags if tag.endswith(".in1k")] or tags
    return HF_WEIGHTS[preferred[0]]


def check_note(pretrained: Pretrained | None) -> str | None:
    """What `run --check` says about the weights: it checks no download, so it says what the run will need."""
    if pretrained is None:
        return None
    if pretrained.source is False:
        return "weights: model.pretrained is false, so trials train from random init"
    fallback = " (or train from random init: model.allow_random_init is true)" if pretrained.allow_random_init else ""
    if pretrained.file:
        state = "found" if Path(pretrained.file).is_file() else "NOT found"
        return f"weights: {pretrained.describe()} will be loaded ({state} here){fallback}"
    repo, filename = official_file(pretrained.preset or "")
    cached = _hf_cached(repo, filename)
    where = f"in the Hugging Face cache at {cached}" if cached else "downloaded from Hugging Face when the study runs"
    return (f"weights: {pretrained.describe()} will be needed, {where}; without network copy {filename} here and "
            f"--set model.pretrained=/path/to/{filename}{fallback}")


def _hf_cached(repo: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id=repo, filename=filename)
    except Exception:  # noqa: BLE001 - no package or an odd cache: the note just says it will be downloaded
        return None
    return found if isinstance(found, str) else None


# -- reading the weights once per process ------------------------------------------------------------------------------

_CACHE: dict[Pretrained, tuple[dict[str, Any] | None, str]] = {}


def weights_for(pretrained: Pretrained, echo: Callable[[str], None] = print) -> tuple[dict[str, Any] | None, str]:
    """The state dict and a tag naming it (for the trial's fidelity), or (None, "random init") with a warning."""
    if pretrained not in _CACHE:
        _CACHE[pretrained] = _read_weights(pretrained, echo)
    return _CACHE[pretrained]


def _read_weights(pretrained: Pretrained, echo: Callable[[str], None]) -> tuple[dict[str, Any] | None, str]:
    from blocks.presets import pretrained_weights

    if pretrained.source is False:
        echo("warning: model.pretrained is false: the fine-tuning study trains from random init")
        return None, RANDOM_INIT
    try:
        if pretrained.file:
            state = pretrained_weights(pretrained.preset or "model", pretrained.file, None, None)
            stat = os.stat(pretrained.file)
            return state, f"file {Path(pretrained.file).name} ({stat.st_size} bytes)"
        repo, filename = official_file(pretrained.preset or "")
        state = pretrained_weights(pretrained.preset or "", None, repo, filename)
        return state, f"{repo}/{filename}"
    except HybridlabError as exc:
        reason = _reason(str(exc))
        if pretrained.allow_random_init:
            echo(f"warning: {reason}; training from random init instead (model.allow_random_init)")
            return None, RANDOM_INIT
        if pretrained.file:
            raise WeightsUnavailable(f"model.pretrained: {reason}") from None
        _, filename = official_file(pretrained.preset or "")
        raise WeightsUnavailable(f"model.pretrained: {reason}; without network, copy {filename} here and "
                                 f"--set model.pretrained=/path/to/{filename}") from None


def _reason(message: str) -> str:
    """A preset loader's one-line error without its timm-specific advice."""
    return " ".join(message.split("; without network")[0].split())


# -- loading into one trial's model --------------------------------------------------------------------------------------

def load_pretrained(model: Any, state: Mapping[str, Any]) -> dict[str, Any]:
    """Load every tensor of `state` whose key and shape fit `model`; the rest keeps the model's own initialisation.

    Returns the trial attributes: tensors loaded, initialised (in the model, not loaded: a replaced head, the
    blocks another layout changes), unused (in the weights, not in the model), and whether the head was replaced.
    Nothing fitting is one line (the weights belong to another model).
    """
    from blocks.checkpoint import load_official_checkpoint

    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    result = load_official_checkpoint(model, dict(state), strict=False)
    initialised = set(result.missing) | {k for k, _, _ in result.mismatched}
    initialised = {k for k in initialised if not k.endswith("num_batches_tracked")}
    loaded = len(own) - len(initialised)
    if loaded <= 0:
        raise HybridlabError(f"none of the {len(state)} pretrained tensors fit this model ({result.describe()})")
    head = {k for k, _, _ in result.mismatched if k.startswith("head.")}
    return {
        "weights_loaded": loaded,
        "weights_initialised": len(initialised),
        "weights_unused": len([k for k in result.unexpected if not k.endswith("num_batches_tracked")]),
        "head_replaced": bool(head),
    }


def apply_pretrained(pretrained: Pretrained, model: Any, prefix: str = "",
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Load the study's weights into a freshly built trial model; the trial attributes (with `weights_source`)."""
    state, tag = weights_for(pretrained, echo)
    if state is None:
        return {"weights_source": RANDOM_INIT, "weights_loaded": 0}
    attrs = {"weights_source": tag, **load_pretrained(model, state)}
    head = ", head replaced for the new class count" if attrs["head_replaced"] else ""
    echo(f"{prefix} weights: {attrs['weights_loaded']} tensors loaded from {tag}, {attrs['weights_initialised']} "
         f"initialised{head}".strip())
    return attrs


def weights_tag(pretrained: Pretrained | None, echo: Callable[[str], None] = print) -> str | None:
    """What the trials start from, for the fidelity hash (a random-init fallback is another fidelity)."""
    return None if pretrained is None else weights_for(pretrained, echo)[1]


def check_stages(recipe: Any, spec: Any) -> None:
    """`train.freeze_stages` may only name stages the model has."""
    stages = getattr(recipe, "freeze_stages", ()) or ()
    count = len(getattr(spec, "parsed").stages) if spec is not None else None
    for item in stages:
        if item != "stem" and count is not None and int(item) > count:
            raise ConfigError(f"stage {item} does not exist (the model has {count} stages)", "train.freeze_stages")


__all__ = ["PRETRAINED_KEYS", "Pretrained", "WeightsUnavailable", "apply_pretrained", "check_note", "check_stages",
           "load_pretrained", "parse_pretrained", "pop_pretrained_keys", "weights_for", "weights_tag"]
