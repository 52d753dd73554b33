"""Study files: one YAML file per study, validated as a whole before any training.

Every problem is reported on its own line with the key it concerns (`model.num_heads: ...`), so a
user fixes the file once. `--set key=value` overrides (dotted keys, YAML values) apply before validation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blocks.spec import ModelSpec
from hybridlab.errors import ConfigError, HybridlabError
from hybridlab.userimports import import_modules
from search_space.constraints import Constraints
from search_space.space import SearchSpace
from studies.baselines import parse_baseline

BUILTIN_DIR = Path(__file__).resolve().parent
TOP_KEYS = (
    "name", "description", "data", "model", "search_space", "train", "measure", "objectives", "sampler",
    "n_trials", "seeds", "constraints", "storage", "ablation", "devices", "baselines", "imports",
)
SAMPLERS = ("grid", "tpe", "nsga2", "gp", "random")
METRICS = {
    "top1": "maximize", "top5": "maximize", "val_loss": "minimize", "throughput_img_s": "maximize",
    "train_throughput_img_s": "maximize", "latency_ms": "minimize", "params": "minimize", "macs": "minimize",
    "flops": "minimize", "peak_mem_mb": "minimize",
}
MAX_GRID = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class StudyConfigError(HybridlabError):
    """All problems of a study file; `problems` holds one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        self.source = source
        Exception.__init__(self, "\n".join(f"{source}: {p}" for p in self.problems))


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"


@dataclass
class StudyConfig:
    """A validated study. `raw` is the YAML mapping after overrides (what gets saved with results)."""

    name: str
    description: str
    data: dict[str, Any]
    model: ModelSpec
    space: SearchSpace
    recipe: Any  # studies.training.TrainRecipe
    measure: dict[str, Any]
    objectives: list[Objective]
    sampler: dict[str, Any]
    n_trials: int | None
    seeds: list[int]
    constraints: Constraints
    storage: str | None
    ablation: dict[str, Any] | None
    devices: int
    baselines: list[Any] = field(default_factory=list)  # studies.baselines.Baseline
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = "<study>"

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def builtin_studies() -> dict[str, Path]:
    """The study files shipped in studies/ (quickstart, mambavision_table5_patterns, ...)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_study_file(name_or_path: str | None) -> Path:
    """A path, or the name of a built-in study; None means the quickstart study."""
    if name_or_path is None:
        name_or_path = "quickstart"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise HybridlabError(f"study file {path} not found")
        return path
    builtins = builtin_studies()
    if name_or_path in builtins:
        return builtins[name_or_path]
    raise HybridlabError(f"no study file {name_or_path!r} (built-in studies: {', '.join(builtins)})")


def load_raw(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HybridlabError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, col {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyConfigError(str(path), [f"{where}invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise StudyConfigError(str(path), [f"expected a mapping at the top level, got {type(data).__name__}"])
    return data


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`train.epochs=2` style overrides; values are YAML (`seeds=[0,1]`, `storage=null`)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}", "--set")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"cannot read the value of {key!r} as YAML: {text!r}", "--set") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def load_study_config(
    name_or_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    raw: Mapping[str, Any] | None = None,
    check_data: bool = True,
) -> StudyConfig:
    """Read, override and validate a study file (or a raw mapping); StudyConfigError lists every problem."""
    if raw is None:
        path = resolve_study_file(None if name_or_path is None else str(name_or_path))
        source = str(path)
        data = load_raw(path)
    else:
        source, data = str(name_or_path or "<study>"), copy.deepcopy(dict(raw))
    data = apply_overrides(data, overrides)
    return _validate(data, source, check_data)


def _study_folder(source: str) -> Path:
    """The folder a study file's relative names (`imports:`) are resolved against."""
    path = Path(source)
    return path.parent if path.parent != Path("") else Path.cwd()


def _validate(data: dict[str, Any], source: str, check_data: bool) -> StudyConfig:
    problems: list[str] = []

    def attempt(fn: Callable[[], Any], default: Any = None) -> Any:
        try:
            return fn()
        except StudyConfigError as exc:
            problems.extend(exc.problems)
        except HybridlabError as exc:
            problems.append(str(exc))
        return default

    attempt(lambda: _imports(data.get("imports"), _study_folder(source)))  # user blocks must be registered before patterns parse
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"unknown key {key!r} (known: {', '.join(TOP_KEYS)})")
    name = attempt(lambda: _name(data.get("name")), "study")
    description = str(data.get("description") or "")
    data_cfg = attempt(lambda: _data(data.get("data"), check_data))
    base = attempt(lambda: _model(data.get("model"), data_cfg))
    space = attempt(lambda: SearchSpace.from_config(data.get("search_space"), base)) if base else None
    recipe = attempt(lambda: _recipe(data.get("train")))
    measure = attempt(lambda: _measure(data.get("measure"), data_cfg), {})
    objectives = attempt(lambda: _objectives(data.get("objectives")), [])
    sampler = attempt(lambda: _sampler(data.get("sampler"), objectives), {})
    n_trials = attempt(lambda: _optional_int(data.get("n_trials"), "n_trials", 1))
    seeds = attempt(lambda: _seeds(data.get("seeds", [0])), [0])
    constraints = attempt(lambda: Constraints.from_config(data.get("constraints")), Constraints())
    storage = data.get("storage")
    if storage is not None and not isinstance(storage, str):
        problems.append(f"storage: expected a URL string, got {storage!r}")
    ablation = attempt(lambda: _ablation(data.get("ablation"), space))
    devices = attempt(lambda: _optional_int(data.get("devices", 1), "devices", 1), 1)
    entries = attempt(lambda: _mapping(data.get("baselines"), "baselines"), {}) if base else {}
    baselines = [b for b in (attempt(lambda k=k, v=v: parse_baseline(k, v, base)) for k, v in entries.items()) if b]
    if space is not None and sampler.get("name") != "grid" and n_trials is None:
        problems.append("n_trials: required unless the sampler is 'grid'")
    if space is not None and sampler.get("name") == "grid" and space.size() > MAX_GRID:
        problems.append(f"sampler: a grid over {space.size():,} assignments is too big (max {MAX_GRID:,}); use tpe, nsga2 or gp")
    if space is not None and base is not None and data_cfg is not None:
        attempt(lambda: _check_windows(space, data_cfg))
    if problems:
        raise StudyConfigError(source, problems)
    return StudyConfig(
        name=name, description=description, data=data_cfg, model=base, space=space, recipe=recipe,
        measure=measure, objectives=objectives, sampler=sampler, n_trials=n_trials, seeds=seeds,
        constraints=constraints, storage=storage, ablation=ablation, devices=devices, baselines=baselines, raw=data,
        source=source,
    )


def _imports(value: Any, folder: Path) -> None:
    """Import the study's own block modules, looked up next to the study file and in the current folder."""
    names = value if isinstance(value, list) else ([] if value is None else [value])
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"expected module names, got {value!r}", "imports")
    import_modules(names, where="imports", search=[folder])


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"expected a study name of letters, digits, '_', '-', '.', got {value!r}", "name")
    return value


def _mapping(value: Any, where: str, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a mapping, got {type(value).__name__ if value is not None else 'nothing'}", where)
    return dict(value)


def _data(value: Any, check: bool) -> dict[str, Any]:
    from studies.data import DATASETS, make_datamodule

    cfg = _mapping(value, "data", required=True)
    if "name" not in cfg:
        raise ConfigError(f"missing 'name' (datasets: {', '.join(DATASETS)})", "data.name")
    if cfg["name"] not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg['name']!r} (datasets: {', '.join(DATASETS)})", "data.name")
    try:
        datamodule = make_datamodule(**cfg)
    except HybridlabError as exc:
        raise ConfigError(str(exc), "data") from None
    except TypeError as exc:
        raise ConfigError(str(exc), "data") from None
    if check and hasattr(datamodule, "check"):
        try:
            datamodule.check()
        except HybridlabError as exc:
            raise ConfigError(str(exc), "data") from None
    cfg["_num_classes"] = datamodule.num_classes
    cfg["_in_chans"] = datamodule.in_chans
    cfg["_img_size"] = datamodule.img_size
    return cfg


def _model(value: Any, data_cfg: dict[str, Any] | None) -> ModelSpec:
    cfg = _mapping(value, "model", required=True)
    preset = cfg.pop("preset", None)
    if data_cfg is not None:
        cfg.setdefault("num_classes", data_cfg["_num_classes"])
        cfg.setdefault("in_chans", data_cfg["_in_chans"])
    try:
        if preset is not None:
            from blocks.presets import preset_spec

            return preset_spec(str(preset), **cfg)
        if "pattern" not in cfg:
            raise ConfigError("needs 'pattern' or 'preset'", "model")
        pattern = cfg.pop("pattern")
        return ModelSpec.create(pattern, **cfg)
    except ConfigError as exc:
        if exc.where and not exc.where.startswith("model"):
            raise ConfigError(exc.args[0].split(": ", 1)[-1], f"model.{exc.where}") from None
        raise
    except HybridlabError as exc:
        raise ConfigError(str(exc), "model.pattern") from None


def _recipe(value: Any) -> Any:
    from studies.training import TrainRecipe

    cfg = _mapping(value, "train")
    try:
        return TrainRecipe.from_dict(cfg)
    except ConfigError as exc:
        if exc.where and not exc.where.startswith("train"):
            raise ConfigError(exc.args[0].split(": ", 1)[-1], f"train.{exc.where}") from None
        raise


def _measure(value: Any, data_cfg: dict[str, Any] | None) -> dict[str, Any]:
    from hybridlab.measure import MeasureProfile

    cfg = _mapping(value, "measure")
    if data_cfg is not None:
        cfg.setdefault("img_size", data_cfg["_img_size"])
        cfg.setdefault("in_chans", data_cfg["_in_chans"])
    try:
        MeasureProfile.from_dict(cfg)
    except ConfigError as exc:
        if exc.where and not exc.where.startswith("measure"):
            raise ConfigError(exc.args[0].split(": ", 1)[-1], f"measure.{exc.where}") from None
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), "measure") from None
    return cfg


def _objectives(value: Any) -> list[Objective]:
    if value is None:
        return [Objective("top1", "maximize"), Objective("throughput_img_s", "maximize")]
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        where = f"objectives[{i}]"
        if isinstance(item, str):
            name, direction = item, METRICS.get(item)
        elif isinstance(item, Mapping):
            name, direction = item.get("name"), item.get("direction", METRICS.get(str(item.get("name"))))
        else:
            raise ConfigError(f"expected a metric name or {{name, direction}}, got {item!r}", where)
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r} (known: {', '.join(METRICS)})", where)
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"direction must be maximize or minimize, got {direction!r}", where)
        out.append(Objective(name, direction))
    if not out:
        raise ConfigError("needs at least one objective", "objectives")
    if len({o.name for o in out}) != len(out):
        raise ConfigError("an objective is listed twice", "objectives")
    return out


def _sampler(value: Any, objectives: list[Objective]) -> dict[str, Any]:
    cfg = {"name": value} if isinstance(value, str) else _mapping(value, "sampler")
    cfg.setdefault("name", "tpe")
    if cfg["name"] not in SAMPLERS:
        raise ConfigError(f"unknown sampler {cfg['name']!r} (known: {', '.join(SAMPLERS)})", "sampler.name")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"expected an integer, got {seed!r}", "sampler.seed")
    allowed = {"name", "seed", "n_startup_trials", "population_size"}
    for key in cfg:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(allowed))})", f"sampler.{key}")
    return cfg


def _optional_int(value: Any, where: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"expected an integer >= {minimum}, got {value!r}", where)
    return value


def _seeds(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in items):
        raise ConfigError(f"expected a list of non-negative integers, got {value!r}", "seeds")
    if len(set(items)) != len(items):
        raise ConfigError("a seed is listed twice", "seeds")
    return list(items)


def _ablation(value: Any, space: SearchSpace | None) -> dict[str, Any] | None:
    if value is None:
        return None
    cfg = _mapping(value, "ablation")
    for key in cfg:
        if key not in ("default_label", "names"):
            raise ConfigError(f"unknown key {key!r} (known: default_label, names)", f"ablation.{key}")
    if space is not None and "default_label" in cfg:
        labels = {c.label for c in space.sample_candidates(MAX_GRID)}
        if cfg["default_label"] not in labels:
            raise ConfigError(
                f"{cfg['default_label']!r} is not a label of the search space (labels: {', '.join(sorted(labels))})",
                "ablation.default_label",
            )
    return cfg


def _check_windows(space: SearchSpace, data_cfg: dict[str, Any]) -> None:
    """A window larger than its token stage's feature map only adds zero padding: refuse it."""
    img = data_cfg["_img_size"]
    base = space.base
    for cand in space.sample_candidates(64):
        spec = cand.spec
        side = img // spec.stem_stride
        for i, stage in enumerate(spec.parsed.stages):
            window = spec.window_size[i]
            for block in stage:
                if not block.block_type.is_token:
                    continue
                w = block.option("window") or window
                if w > side:
                    where = "model.window_size" if not block.option("window") else "search_space"
                    raise ConfigError(
                        f"stage {i + 1} window {w} is larger than its {side}x{side} feature map at img_size {img} "
                        f"(stem stride {spec.stem_stride}); use at most {side}",
                        where,
                    )
            side = max(1, (side + 1) // 2)
    del base
