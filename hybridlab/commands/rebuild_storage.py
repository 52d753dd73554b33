"""`hybridlab rebuild-storage STUDY`: restore a lost or broken study storage from the study's folder.

The folder's `trials.csv` (rewritten after every trial), `manifest.json` and `study.yaml` hold what the
storage held: finished trials come back with their numbers, values and attributes (see studies.restore).
A broken storage file is moved aside, never deleted.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("rebuild-storage", help="restore a study's storage from its trials.csv")
    parser.add_argument("study", help="study name (a folder under --results-dir) or the study folder itself")
    parser.add_argument("--results-dir", default="results", type=Path, help="where studies write (default ./results)")
    parser.add_argument("--storage", help="the storage to rebuild into (default: $HYBRIDLAB_STORAGE, else the "
                                          "folder's study.db)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hybridlab.commands.run import storage_from
    from hybridlab.errors import HybridlabError
    from studies.restore import rebuild_storage
    from studies.runner import study_folder
    from studies.storage import close_storage, default_storage_url

    folder = Path(args.study)
    if not (folder / "trials.csv").is_file():
        folder = study_folder(args.results_dir, args.study)
    if not folder.is_dir():
        raise HybridlabError(f"no study folder {folder} (give the study's name and --results-dir, or its folder)")
    url = storage_from(args) or default_storage_url(folder.parent, folder.name)
    study = rebuild_storage(folder, url)
    close_storage(study._storage)
    return 0
