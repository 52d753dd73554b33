"""`strategy: one_shot`: train one weight-sharing supernet, score every layout with inherited weights, then
train the best few (and any named ones) stand-alone in the same study.

Phases, each recorded in the study's storage so a killed run resumes at the right one:

1. Train the supernet (`studies.one_shot_train`) under `<results>/<study>/supernet/` with the study's recipe
   (`strategy.epochs` may differ), data, first seed and checkpoints. When it is done it is recorded as one
   trial with user attribute `role: supernet`, state PRUNED and a `fail_reason` saying it is no layout, so
   every table and report that reads COMPLETE trials leaves it out of its rows.
2. Score the layouts (`studies.one_shot_score`): all of them up to 10,000, else an evolutionary search.
   The scores go to `supernet/scores.json` first, then into the storage as COMPLETE trials, one per layout,
   with `fidelity_label: supernet`, `fidelity_rank: -1` and a `fidelity` hash of their own (so a stand-alone
   trial of the same layout is never taken for a finished twin of its supernet score). The scoring's wall and
   CPU time go into one more PRUNED trial (`role: supernet_scoring`), so the report can set the cost of the
   whole ranking against one stand-alone training.
3. Queue the stand-alone trainings: the top `retrain_top` of the predicted front and the `retrain` layouts,
   as ordinary planned trials (slots), which the worker loop then runs like any sampled study's trials.

The phases run under a file lock in the supernet folder, so a second worker on the same host waits for them
and then joins the stand-alone trainings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from hybridlab.atomic import atomic_write
from hybridlab.errors import HybridlabError
from hybridlab.fidelity import SUPERNET, SUPERNET_RANK
from search_space.families import TABLE5
from studies import one_shot_score as scoring
from studies.one_shot_config import NAME, OneShotSettings, SupernetLayout, retrain_patterns, supernet_layout

ROLE = "role"  # user attribute of the supernet-training trial: "supernet"
SCORED = "one_shot_scored"  # study attribute: layouts stored (phase 2 done)
RETRAIN_PLANNED = "one_shot_retrain_planned"  # study attribute: stand-alone trainings queued (phase 3 done)
NOT_A_ROW = "supernet training: not a layout (its layouts are the rows with fidelity_label 'supernet')"
NOT_A_ROW_SCORING = "supernet scoring: not a layout (the time it took to score the rows with fidelity_label 'supernet')"
CHUNK = 512  # layouts scored (and trials added) per step, with one progress line each


def is_one_shot(config: Any) -> bool:
    return getattr(getattr(config, "strategy", None), "name", None) == NAME


def layout_labels(layout: SupernetLayout, named: tuple[str, ...] = ()) -> dict[str, str]:
    """`{pattern: family}` for the Table 5 families the space holds (a row's label; others use the pattern).
    Where families coincide (shallow stages), the study's `retrain` names win, then placement rules over chance."""
    out: dict[str, str] = {}
    named = tuple(n for n in named if n in TABLE5)
    for family in [*named, *sorted(TABLE5, key=lambda f: f == "random")]:
        out.setdefault(layout.family_pattern(family), family)
    return out


class OneShotSearch:
    """The one-shot phases of a study; `run(study)` does what the storage says is still missing."""

    def __init__(self, config: Any, folder: Path, objective: Any, echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.settings: OneShotSettings = config.strategy
        self.layout = supernet_layout(config.space)
        self.root = folder / "supernet"
        self.objective = objective  # studies.objective.TrialObjective: data module, fidelity, device
        self.echo = echo
        self.seed = int(config.seeds[0])
        self.labels = layout_labels(self.layout, self.settings.retrain)

    # -- phases ----------------------------------------------------------------------------------
    def run(self, study: optuna.Study) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with _phase_lock(self.root / ".lock", self.echo):
            if supernet_trial(study) is None:
                self.train(study)
            if SCORED not in study.user_attrs:
                self.score(study)
            if not study.user_attrs.get(RETRAIN_PLANNED):
                self.plan_retrain(study)

    def recipe(self) -> Any:
        epochs = self.settings.epochs
        return self.config.recipe if epochs is None else dataclasses.replace(self.config.recipe, epochs=epochs)

    def fidelity(self) -> str:
        """The supernet scores' fidelity hash: the study's data and recipe plus the one-shot settings."""
        blob = json.dumps({"full": self.objective.fidelity(), "one_shot": self.settings.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def train(self, study: optuna.Study) -> None:
        from studies.objective import device_lock
        from studies.one_shot_train import build_supernet, train_supernet
        from studies.progress import ProgressLines

        n = self.layout.num_layouts
        self.echo(f"[supernet] training over {n:,} layouts ({len(self.layout.positions)} positions x "
                  f"{len(self.layout.choices)} choices, {self.settings.sampling} sampling), seed {self.seed}")
        started = time.time()
        net = build_supernet(self.layout, self.settings.share, self.seed)
        progress = ProgressLines("supernet", echo=self.echo, every_s=self.config.progress_every_s)
        devices = self.objective._trainer_devices()
        with device_lock(self.objective.train_device(), False, self.config.name, self.echo):
            result = train_supernet(net, self.objective.datamodule(), self.recipe(), self.root, self.seed,
                                    self.settings.sampling, callbacks=[progress], echo=self.echo,
                                    accelerator=devices["accelerator"],
                                    devices=devices["devices"] if isinstance(devices["devices"], list) else 1)
        attrs = {ROLE: "supernet", "fail_reason": NOT_A_ROW, "pattern": self.layout.base.pattern,
                 "label": "supernet", "seed": self.seed, "layouts": n, "sampling": self.settings.sampling,
                 "share": self.settings.share, "worker": f"{socket.gethostname()}:{os.getpid()}",
                 "weights": str(self.root / "supernet.pt"), **result}
        attrs["params"] = sum(p.numel() for p in net.parameters())
        study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=attrs))
        self.echo(f"[supernet] trained in {time.time() - started:.0f} s: {result['global_step']} steps, "
                  f"validation top-1 over sampled layouts {result['supernet_val_top1'] or float('nan'):.2f}%")

    def score(self, study: optuna.Study) -> None:
        scores_file = self.root / "scores.json"
        if scores_file.is_file():
            stored = json.loads(scores_file.read_text())
            rows, cost = stored["rows"], stored.get("cost", {})
            self.echo(f"[supernet] {len(rows):,} stored scores read from {scores_file}")
        else:
            wall, cpu = time.perf_counter(), time.process_time()
            rows, images = self._score_rows()
            cost = {"scoring_time_s": time.perf_counter() - wall, "scoring_cpu_s": time.process_time() - cpu,
                    "scoring_images": images, "layouts": len(rows), "load_avg_end": os.getloadavg()[0]}
            atomic_write(scores_file, json.dumps({"fidelity": self.fidelity(), "cost": cost, "rows": rows}))
        self._store(study, rows)
        if cost and not any(t.user_attrs.get(ROLE) == "supernet_scoring" for t in study.get_trials(deepcopy=False)):
            study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={
                ROLE: "supernet_scoring", "fail_reason": NOT_A_ROW_SCORING, "label": "supernet scoring",
                "pattern": self.layout.base.pattern, "seed": self.seed, **cost}))
        study.set_user_attr(SCORED, len(rows))

    def _score_rows(self) -> tuple[list[dict[str, Any]], int]:
        """Every scored layout's row, and the number of validation images each was scored on."""
        from studies.one_shot_train import WEIGHTS, build_supernet, load_supernet

        if not (self.root / WEIGHTS).is_file():
            raise HybridlabError(f"the supernet's weights {self.root / WEIGHTS} are gone; remove its trial "
                                 "(role: supernet) or the study to train it again")
        net = load_supernet(build_supernet(self.layout, self.settings.share, self.seed), self.root)
        dm = self.objective.datamodule()
        calib = scoring.calibration_batches(dm, self.settings.calib_batches)
        batches = scoring.scoring_batches(dm, self.settings.score_subset)
        images = sum(len(y) for _, y in batches)
        n = self.layout.num_layouts
        started = time.time()

        def evaluate(paths: list[tuple[int, ...]]) -> list[dict[str, Any]]:
            scores = scoring.score_layouts(net, paths, calib, batches)
            rows = [{"path": list(p), "pattern": net.pattern_of(p), **scores[p]} for p in paths]
            if "throughput_img_s" in self.config.metric_names:
                predicted = scoring.predict_throughput(self.config, self.layout, [r["pattern"] for r in rows],
                                                       self.root, self.echo)
                for r in rows:
                    r["throughput_img_s"] = predicted[r["pattern"]]
            return rows

        if self.settings.exhaustive(n):
            self.echo(f"[supernet] scoring all {n:,} layouts on {images:,} validation images")
            paths, rows = list(net.paths()), []
            for i in range(0, len(paths), CHUNK):
                rows += evaluate(paths[i:i + CHUNK])
                self.echo(f"[supernet] scored {len(rows):,}/{n:,} layouts ({time.time() - started:.0f} s)")
        else:
            s = self.settings
            self.echo(f"[supernet] evolutionary search over {n:,} layouts: population {s.population}, "
                      f"{s.generations} generations, on {images:,} validation images")
            seen = scoring.evolve(evaluate, self.config.objectives, len(net.positions), len(net.choices),
                                  s.population, s.generations, self.seed)
            rows = list(seen.values())
            self.echo(f"[supernet] scored {len(rows):,} visited layouts ({time.time() - started:.0f} s)")
        return rows, images

    def _store(self, study: optuna.Study, rows: list[dict[str, Any]]) -> None:
        """Add every scored layout as a finished trial (those a killed run already added are skipped)."""
        done = {t.user_attrs.get("pattern") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("fidelity_label") == SUPERNET}
        todo = [r for r in rows if r["pattern"] not in done]
        fidelity = self.fidelity()
        parent = supernet_trial(study)
        for i in range(0, len(todo), CHUNK):
            study.add_trials([self._trial(r, fidelity, parent) for r in todo[i:i + CHUNK]])
        if todo:
            self.echo(f"[supernet] {len(todo):,} scored layouts stored (fidelity {SUPERNET!r})")

    def _trial(self, row: dict[str, Any], fidelity: str, parent: FrozenTrial | None) -> FrozenTrial:
        spec = self.layout.base.with_settings(pattern=row["pattern"])
        attrs = {
            "pattern": row["pattern"], "arch_hash": spec.arch_hash(), "family": "free",
            "label": self.labels.get(row["pattern"], row["pattern"]), "seed": self.seed, "fidelity": fidelity,
            "fidelity_label": SUPERNET, "fidelity_rank": SUPERNET_RANK, "top1": row["top1"],
            "val_loss": row["val_loss"], "params": int(row["params"]), "supernet_path": row["path"],
        }
        if "throughput_img_s" in row:
            attrs["throughput_img_s"] = row["throughput_img_s"]
            attrs["throughput_predicted"] = True
        if parent is not None:
            attrs["supernet_trial"] = parent.number
        values = [float(attrs[name]) for name in self.config.metric_names]
        return create_trial(values=values, user_attrs=attrs)

    def plan_retrain(self, study: optuna.Study) -> None:
        """Queue the stand-alone trainings: the top of the predicted front, then the named layouts."""
        from studies.planning import PLANNED

        rows = [dict(t.user_attrs) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("fidelity_label") == SUPERNET]
        picked: dict[str, tuple[str, str]] = {}
        for i in scoring.top_of_front(rows, self.config.objectives, self.settings.retrain_top):
            picked[rows[i]["pattern"]] = (rows[i]["label"], "front")
        for label, pattern in retrain_patterns(self.layout, self.settings.retrain).items():
            old = picked.get(pattern)
            picked[pattern] = (label if old is None else old[0], "named" if old is None else "front, named")
        have = {t.user_attrs["slot"] for t in study.get_trials(deepcopy=False) if "slot" in t.user_attrs}
        for slot, (pattern, (label, why)) in enumerate(picked.items()):
            if slot in have:
                continue
            from studies.one_shot_config import check_in_space

            params = self.layout.params_of(check_in_space(self.layout, pattern, "strategy.retrain"))
            study.enqueue_trial(params, user_attrs={"slot": slot, "seed": self.seed, "layout_label": label,
                                                    "one_shot": why})
        study.set_user_attr(PLANNED, len(picked))
        study.set_user_attr(RETRAIN_PLANNED, True)
        if picked:
            self.echo(f"[supernet] {len(picked)} layouts queued for stand-alone training: "
                      + ", ".join(label for label, _ in list(picked.values())[:12]))


def supernet_trial(study: optuna.Study) -> FrozenTrial | None:
    """The recorded supernet training of the study, if it has finished."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(ROLE) == "supernet":
            return t
    return None


@contextlib.contextmanager
def _phase_lock(path: Path, echo: Callable[[str], None]) -> Iterator[None]:
    """One process at a time runs the one-shot phases of a study (on this host); the others wait."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo("[supernet] another worker runs the supernet phases; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(study: optuna.Study) -> None:
    """At study creation: the plan is the one-shot phases' to make, so workers do not wait for a grid plan."""
    from studies.planning import PLANNED

    if PLANNED not in study.user_attrs:
        study.set_user_attr(PLANNED, 0)


__all__ = ["NOT_A_ROW", "NOT_A_ROW_SCORING", "ROLE", "OneShotSearch", "is_one_shot", "layout_labels", "prepare", "supernet_trial"]
