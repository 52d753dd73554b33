#!/usr/bin/env python3
"""Inject faults into real tiny studies and check that nothing is lost, leaked or hung.

Every scenario runs `python3 -m hybridlab.cli ...` in a subprocess (with a timeout: a timeout is a hang),
on a tiny synthetic study written here, with a private device-lock folder and a storage URL that carries a
fake password. After each fault comes the documented recovery (a rerun, or `hybridlab rebuild-storage`),
then the checks: trials that had finished before the fault are still COMPLETE in the storage and in
trials.csv with the same results, no output or file under the results folder holds the password, and no
output holds a traceback. The last lines are a table: the goal is zeros in every column but "inputs tried".

    python3 benchmarks/fault_injection.py            # every scenario (about 5 minutes on 2 cores)
    python3 benchmarks/fault_injection.py --quick    # a subset
    python3 benchmarks/fault_injection.py --keep --timeout 90
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from fault_checks import csv_rows, db_states, finished, leftovers, planned, query  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2fault"
TRACE = "Traceback (most recent call last)"
FAULTS, CLI = "faults (kills, corruptions, disk full)", "bad CLI input"

# The CLI, killing itself (SIGKILL) when training reaches epoch $FAULT_KILL_EPOCH.
KILLER = """
import os, signal, sys
import lightning as L
import studies.training
from hybridlab.cli import main
at = int(os.environ["FAULT_KILL_EPOCH"])
real = studies.training.train_and_evaluate
class Kill(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == at:
            os.kill(os.getpid(), signal.SIGKILL)
def train(*args, **kwargs):
    kwargs["callbacks"] = [*kwargs.get("callbacks", ()), Kill()]
    return real(*args, **kwargs)
studies.training.train_and_evaluate = train
sys.exit(main(sys.argv[1:]))
"""


def tiny_study(name: str, epochs: int = 1, seeds: int = 1) -> dict:
    """Three candidates on 32 synthetic 16-px images: a second or two per trial on one core."""
    return {
        "name": name,
        "data": {"name": "synthetic", "num_train": 32, "num_val": 16, "num_classes": 4, "img_size": 16,
                 "batch_size": 16},
        "model": {"pattern": "C | M A", "dim": 8, "in_dim": 8, "num_heads": [1, 2], "window_size": [4, 4],
                  "stem_stride": 2, "drop_path_rate": 0.0},
        "search_space": {"layout": {"stages": [2], "family": ["attn_last_half", "attn_first_half", "mixer_only"]}},
        "train": {"epochs": epochs, "lr": 0.01, "warmup_epochs": 0},
        "measure": {"device": "cpu", "batch_size": 4, "repeats": 1, "warmup_iters": 1, "warmup_s": 0, "iters": 2,
                    "figures": ["compute", "throughput", "latency"]},
        "sampler": "grid",
        "seeds": list(range(seeds)),
    }


class Area:
    """One row of the table, with the notes that explain its non-zero counts."""

    def __init__(self, name: str) -> None:
        self.name, self.tried, self.tracebacks, self.hangs, self.lost, self.notes = name, 0, 0, 0, 0, []


@dataclass
class Result:
    rc: int | None
    out: str
    killed: bool
    hung: bool

    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.strip()]


class Lab:
    """Temp folders, the subprocess runner and the checks every scenario shares."""

    def __init__(self, tmp: Path, timeout: float) -> None:
        self.tmp, self.timeout = tmp, timeout
        self.areas = {FAULTS: Area(FAULTS), CLI: Area(CLI)}
        self.rng = random.Random(0)
        (tmp / "studies").mkdir(parents=True)

    def study_file(self, name: str, **kw) -> Path:
        path = self.tmp / "studies" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_study(name, **kw)))
        return path

    @staticmethod
    def storage(results: Path, name: str) -> str:
        return f"sqlite:///{results / name / 'study.db'}?password={SECRET}"

    def cli(self, *args: str, area: str = FAULTS, kill_epoch: int | None = None,
            kill_when: Callable[[float], bool] | None = None) -> Result:
        """Run the CLI; SIGKILL it once `kill_when(seconds)` says so; count tracebacks, hangs and leaks."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HYBRIDLAB_LOCK_DIR": str(self.tmp / "locks"),
               "PYTHONWARNINGS": "ignore"}  # SQLAlchemy warns that sqlite ignores ?password=: not ours
        env.pop("HYBRIDLAB_STORAGE", None)
        if kill_epoch is not None:
            env["FAULT_KILL_EPOCH"] = str(kill_epoch)
            command = [sys.executable, "-c", KILLER, *args]
        else:
            command = [sys.executable, "-m", "hybridlab.cli", *args]
        log = self.tmp / "last-output.txt"
        started = time.monotonic()
        killed = hung = False
        with open(log, "w") as sink:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > self.timeout:
                    proc.kill()
                    hung = True
                elif kill_when is not None and not killed and kill_when(elapsed):
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                time.sleep(0.05)
        result = Result(proc.returncode, log.read_text(errors="replace"), killed, hung)
        counts, shown = self.areas[area], " ".join(args)[:120]
        counts.tried += 1
        counts.tracebacks += TRACE in result.out
        counts.hangs += hung
        counts.lost += SECRET in result.out
        counts.notes += [f"traceback from {shown}: {(result.lines() or [''])[-1][:150]}"] * (TRACE in result.out)
        counts.notes += [f"hang (> {self.timeout:.0f} s): {shown}"] * hung
        counts.notes += [f"password printed by: {shown}"] * (SECRET in result.out)
        return result

    def run(self, study: Path, results: Path, *extra: str, **kw) -> Result:
        return self.cli("run", str(study), "--results-dir", str(results), "--storage",
                        self.storage(results, study.stem), "--no-report", *extra, **kw)

    def check_leaks(self, results: Path) -> None:
        leaks = [p for p in results.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
        self.areas[FAULTS].notes += [f"password written to {p.relative_to(self.tmp)}" for p in leaks]
        self.areas[FAULTS].lost += len(leaks)

    def check_kept(self, folder: Path, before: dict[int, tuple[str, str]]) -> list[str]:
        """Trials finished before the fault: still COMPLETE in study.db and in trials.csv, same top-1."""
        problems = []
        stored, table = db_states(folder), csv_rows(folder)
        for number, (_, top1) in before.items():
            problems += [f"trial {number} is {stored.get(number)} in study.db"] * bool(stored.get(number) != "COMPLETE")
            row = table.get(number)
            if row is None or row[0] != "COMPLETE" or row[1] != top1:
                problems.append(f"trial {number} changed in trials.csv: {row}")
        self.areas[FAULTS].lost += len(problems)
        return problems


def verdict(problems: list[str]) -> str:
    return "ok" if not problems else "PROBLEM: " + "; ".join(problems)


# ---------------------------------------------------------------- scenarios (each returns its outcome line)

def base(lab: Lab) -> Path:
    """One finished tiny study, copied by the scenarios that break a finished study."""
    study, results = lab.study_file("tiny"), lab.tmp / "base"
    done = lab.run(study, results)
    if done.rc != 0 or len(finished(results / "tiny")) != 3:
        raise SystemExit(f"the tiny study did not finish (exit {done.rc}):\n{done.out[-2000:]}")
    return results


def copy_base(lab: Lab, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(lab.tmp / "base" / "tiny", into / "tiny")
    return into / "tiny"


def kill_training(lab: Lab) -> str:
    """SIGKILL at epoch 2 of a 2-epoch trial; the rerun resumes it. Its broken state also feeds truncation."""
    study, results = lab.study_file("s1", epochs=2), lab.tmp / "s1"
    problems = []
    problems += ["first trial did not finish"] * bool(lab.run(study, results, "--n-trials", "1").rc != 0)
    before = finished(results / "s1")
    killed = lab.run(study, results, kill_epoch=1)
    problems += [f"the killer run ended with {killed.rc}, not SIGKILL"] * bool(killed.rc != -signal.SIGKILL)
    shutil.copytree(results, lab.tmp / "s4")  # a killed trial with a checkpoint, for `truncated_checkpoint`
    again = lab.run(study, results)
    problems += [f"rerun exit {again.rc}"] * (again.rc != 0) + lab.check_kept(results / "s1", before)
    problems += [f"rerun left {len(finished(results / 's1'))} of 3 complete"] * bool(len(finished(results / "s1")) != 3)
    return verdict(problems)


def truncated_checkpoint(lab: Lab) -> str:
    results = lab.tmp / "s4"
    ckpts = sorted((results / "s1" / "trials").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return "skipped: the killed trial left no checkpoint"
    target = ckpts[-1]
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    before = finished(results / "s1")
    again = lab.run(lab.tmp / "studies" / "s1.yaml", results)
    problems = [f"rerun exit {again.rc}"] * (again.rc != 0) + lab.check_kept(results / "s1", before)
    if len(finished(results / "s1")) != 3:
        problems.append(f"the trial with the truncated {target.name} did not finish")
    said = [line for line in again.lines() if "checkpoint" in line.lower()]
    problems += ["no line says the checkpoint was not used"] * (not said)
    return verdict(problems) + f"; {said[0][:110] if said else ''}"


def kill_planning(lab: Lab) -> str:
    """120 queued trials (3 cells x 40 seeds); SIGKILL once a few are queued; the rerun completes the plan."""
    study, results = lab.study_file("s2", seeds=40), lab.tmp / "s2"
    folder = results / "s2"
    first = lab.run(study, results, kill_when=lambda s: len(db_states(folder)) >= 3 and not planned(folder))
    note = "" if first.killed else " (the plan finished before the kill)"
    queued = len(db_states(folder))
    # the rerun must finish the plan; it is killed as soon as the plan is whole (training is another scenario)
    again = lab.run(study, results, kill_when=lambda s: planned(folder) and len(db_states(folder)) >= 120)
    problems = []
    problems += [f"rerun exit {again.rc}: {again.lines()[-1:]}"] * bool(not again.killed and again.rc != 0)
    problems += [f"{len(db_states(folder))} trials queued, not 120"] * bool(len(db_states(folder)) != 120)
    return verdict(problems) + f"{note}; killed with {queued} queued"


def kill_writes(lab: Lab, tries: int) -> str:
    """SIGKILL at a random moment up to 1.5 s after a trial's last epoch line: while the trial's checkpoint,
    storage row and trials.csv are being written."""
    study, results = lab.study_file("s3"), lab.tmp / "s3"
    folder, log = results / "s3", lab.tmp / "last-output.txt"
    problems: list[str] = []
    kept: dict[int, tuple[str, str]] = {}
    for _ in range(tries):
        delay, seen = lab.rng.uniform(0.0, 1.5), []
        def due(s: float, delay: float = delay, seen: list = seen) -> bool:
            if not seen and "epoch 1/1" in log.read_text(errors="replace"):
                seen.append(s)
            return bool(seen) and s >= seen[0] + delay
        lab.run(study, results, kill_when=due)
        if (folder / "trials.csv").exists() and not csv_rows(folder):
            problems.append(f"trials.csv unreadable after a kill {delay:.2f} s after an epoch")
        kept.update(finished(folder))
    again = lab.run(study, results)
    problems += [f"rerun exit {again.rc}"] * (again.rc != 0) + lab.check_kept(folder, kept)
    problems += [f"rerun left {len(finished(folder))} of 3 complete"] * bool(len(finished(folder)) != 3)
    if leftovers(folder):
        lab.areas[FAULTS].notes.append(f"temporary files left after kills: {leftovers(folder)[:4]}")
    return verdict(problems) + f"; {tries} kills, {len(kept)} trials finished before the last"


def empty_storage(lab: Lab) -> str:
    """A 0-byte study.db next to trials.csv: refused in one line; rebuild-storage brings it back."""
    results = lab.tmp / "s5"
    folder = copy_base(lab, results)
    before, csv_bytes = finished(folder), (folder / "trials.csv").read_bytes()
    (folder / "study.db").write_bytes(b"")
    study = lab.tmp / "studies" / "tiny.yaml"
    refused = lab.run(study, results)
    problems = []
    if refused.rc != 2 or len(refused.lines()) != 1:
        problems.append(f"refusal exit {refused.rc} in {len(refused.lines())} lines")
    if (folder / "trials.csv").read_bytes() != csv_bytes:
        problems.append("trials.csv changed by the refused run")
        lab.areas[FAULTS].lost += 1
    rebuilt = lab.cli("rebuild-storage", "tiny", "--results-dir", str(results),
                      "--storage", lab.storage(results, "tiny"))
    problems += [f"rebuild-storage exit {rebuilt.rc}: {rebuilt.lines()[-1:]}"] * bool(rebuilt.rc != 0)
    again = lab.run(study, results)
    if again.rc != 0 or not any("0 to run" in line for line in again.lines()):
        problems.append(f"rerun after rebuild: exit {again.rc}, {again.lines()[:1]}")
    problems += lab.check_kept(folder, before)
    return verdict(problems)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[str | None]:
    """A small tmpfs mounted at `where` for the block; yields why not where this machine does not allow it."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    try:
        yield (done.stderr.decode().strip() or f"mount exit {done.returncode}") if done.returncode else None
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True) if not done.returncode else None


def read_only(lab: Lab) -> str:
    """A finished study on a tmpfs remounted read-only: a rerun ends in one line and changes nothing."""
    results = lab.tmp / "s6"
    with tmpfs(results, "16m") as why:
        if why:
            return f"skipped: cannot mount a tmpfs ({why})"
        folder = copy_base(lab, results)
        before, csv_bytes = finished(folder), (folder / "trials.csv").read_bytes()
        ro = subprocess.run(["mount", "-o", "remount,ro", str(results)], capture_output=True)
        if ro.returncode:
            return f"skipped: cannot remount read-only ({ro.stderr.decode().strip()})"
        try:
            refused = lab.run(lab.tmp / "studies" / "tiny.yaml", results)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(results)], check=True)
        problems = [f"exit {refused.rc} in {len(refused.lines())} lines: {refused.lines()[-1:]}"] * bool(
            refused.rc in (0, None) or len(refused.lines()) != 1)
        problems += ["trials.csv changed"] * bool((folder / "trials.csv").read_bytes() != csv_bytes)
        lab.check_leaks(results)
        return verdict(problems + lab.check_kept(folder, before)) + f"; {(refused.lines() or [''])[-1][:100]}"


def disk_full(lab: Lab) -> str:
    """A 2 MB tmpfs holding a finished study, filled to 200 KB free: a new study there fails in one line,
    the finished one is untouched, and after freeing space a rerun resumes the new one."""
    results = lab.tmp / "s7"
    with tmpfs(results, "2m") as why:
        if why:
            return f"skipped: cannot mount a tmpfs ({why})"
        folder = copy_base(lab, results)
        before, csv_bytes = finished(folder), (folder / "trials.csv").read_bytes()
        (results / "filler").write_bytes(b"\0" * max(0, shutil.disk_usage(results).free - 200_000))
        new = lab.study_file("s7new")
        full = lab.run(new, results)
        last = full.lines()[-1] if full.lines() else ""
        problems = [f"exit {full.rc}; last line {last}"] * bool(full.rc in (0, None) or "hybridlab run: " not in last)
        (results / "filler").unlink()  # the documented recovery: free space, rerun to resume
        again = lab.run(new, results)
        problems += [f"rerun after freeing space: exit {again.rc}, {again.lines()[-1:]}"] * bool(
            again.rc != 0 or len(finished(results / "s7new")) != 3)
        changed = (folder / "trials.csv").read_bytes() != csv_bytes
        problems += ["the finished study's trials.csv changed"] * changed
        lab.check_leaks(results)
        return verdict(problems + lab.check_kept(folder, before)) + f"; exit {full.rc}: {last[:100]}"


def kill_measure(lab: Lab) -> str:
    results = lab.tmp / "s8"
    folder = copy_base(lab, results)
    before = finished(folder)
    args = ("measure", str(lab.tmp / "studies" / "tiny.yaml"), "--results-dir", str(results),
            "--storage", lab.storage(results, "tiny"), "--rounds", "2")
    first = lab.cli(*args, kill_when=lambda s: s >= 7.0)
    again = lab.cli(*args)
    problems = [f"rerun exit {again.rc}: {again.lines()[-1:]}"] * (again.rc != 0) + lab.check_kept(folder, before)
    return verdict(problems) + ("" if first.killed else " (measure ended before the kill)")


def bad_cli(lab: Lab) -> str:
    """Wrong flags and values: each must end non-zero with one line, fast, and never print the password."""
    study = str(lab.tmp / "studies" / "tiny.yaml")
    results = str(lab.tmp / "cli")
    run = ["run", study, "--results-dir", results, "--no-report"]
    inputs = [
        ["run", str(lab.tmp / "nosuch.yaml"), "--results-dir", results],
        [*run, "--n-trials", "-1"], [*run, "--n-trials", "1e20"], [*run, "--n-trials", "100000"],
        [*run, "--set", "train.epochs=nan"], [*run, "--set", "train.lr=inf"], [*run, "--set", "nokey"],
        [*run, "--set", "measure.warmup_s=.inf"], [*run, "--device", "cpux"], [*run, "--storage", "sqlite://"],
        [*run, "--storage", f"postgresql://user:{SECRET}@127.0.0.1:1/db"],
        [*run, "--storage", f"postgresql://user:{SECRET}@[bad/db"],
        ["run", "../../etc/passwd", "--results-dir", results],
        ["show", "M*\u00b2"], ["show", "(((M)*1000)*1000)*1000"], ["show", "(" * 600 + "M" + ")" * 600],
        ["measure", study, "--results-dir", results, "--rounds", "0"],
        ["measure", study, "--results-dir", results, "--threads", "-3"],
        ["rebuild-storage", "nosuch", "--results-dir", results],
        ["status", "../nosuch", "--results-dir", results],
    ]
    accepted = []
    for args in inputs:
        done = lab.cli(*args, area=CLI)
        if done.rc == 0:
            accepted.append(" ".join(args[:1] + args[-2:])[:80])
        elif not done.hung and len(done.lines()) != 1:
            shown = " ".join(args[:1] + args[4:] if args[1:2] == [study] else args)[:100]
            lab.areas[CLI].notes.append(f"{len(done.lines())} lines, not one, from: {shown}")
    lab.check_leaks(Path(results)) if Path(results).exists() else None
    if accepted:
        lab.areas[CLI].notes.append(f"accepted (exit 0): {accepted}")
    return f"{len(inputs)} inputs, {len(accepted)} accepted"


def table(areas: list[Area]) -> list[str]:
    rows = ["| area | inputs tried | tracebacks | hangs or memory blow-ups | data lost or leaked |",
            "|---|---:|---:|---:|---:|"]
    return rows + [f"| {a.name} | {a.tried} | {a.tracebacks} | {a.hangs} | {a.lost} |" for a in areas]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="kill training, empty storage and bad CLI input only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per command before it is a hang")
    opts = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hybridlab-faults-"))
    lab = Lab(tmp, opts.timeout)
    scenarios: list[tuple[str, Callable[[], str]]] = [
        ("kill during training", lambda: kill_training(lab)),
        ("truncated checkpoint", lambda: truncated_checkpoint(lab)),
        ("empty study.db", lambda: empty_storage(lab)),
        ("bad CLI input", lambda: bad_cli(lab)),
    ]
    if not opts.quick:
        scenarios[3:3] = [
            ("kill during planning", lambda: kill_planning(lab)),
            ("kill during writes", lambda: kill_writes(lab, 3)),
            ("read-only results folder", lambda: read_only(lab)),
            ("small full disk", lambda: disk_full(lab)),
            ("kill during measurement", lambda: kill_measure(lab)),
        ]
    started = time.monotonic()
    try:
        base(lab)
        print(f"base tiny study: finished in {time.monotonic() - started:.0f} s", flush=True)
        for name, scenario in scenarios:
            t0 = time.monotonic()
            try:
                outcome = scenario()
            except Exception as error:  # a scenario's own failure is reported, the others still run
                outcome = f"PROBLEM: the scenario itself failed: {type(error).__name__}: {error}"
            print(f"{name:<26} {time.monotonic() - t0:5.0f} s  {outcome}", flush=True)
        for leaks_in in ("s1", "s2", "s3", "s4", "s5", "s8", "base"):
            if (tmp / leaks_in).exists():
                lab.check_leaks(tmp / leaks_in)
    finally:
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    areas = [lab.areas[FAULTS], lab.areas[CLI]]
    for area in areas:
        for note in area.notes:
            print(f"note ({area.name}): {note}")
    print(f"total {time.monotonic() - started:.0f} s")
    print("\n".join(table(areas)))
    return 0 if all(a.tracebacks == a.hangs == a.lost == 0 for a in areas) else 1


if __name__ == "__main__":
    sys.exit(main())
