"""The folder of a new run: checked before anything is written, and left as it was found when the run fails before
its first program is archived.

A run that never archived a program (its starting programs failed, its collections did not load, it was killed
while starting) holds nothing worth keeping and nothing to resume; leaving its archive behind would make ``status``
report a run and ``run --out`` refuse the folder. So the files a run writes are removed again, with the folders the
run created for them; anything else in the folder is never touched.
"""
from __future__ import annotations

from pathlib import Path

from evorank.evaluators.errors import EvorankError, check_output_path

# Everything a run writes into its folder (the archive with SQLite's side files, its lock, the saved settings, the
# log, the best program).
RUN_FILES = ("archive.sqlite", "archive.sqlite-wal", "archive.sqlite-shm", "archive.lock", "config.toml", "run.log",
             "best.py")


def first_missing_folder(run_dir: Path) -> Path | None:
    """The outermost folder of ``run_dir``'s path that does not exist yet (what creating the run makes), or None."""
    missing = None
    for folder in [run_dir, *run_dir.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def check_new_run_folder(run_dir: Path) -> Path | None:
    """Refuse, with one line and before anything is written, a folder a new run cannot use: one that cannot be
    created or written, or that holds a run with archived programs (or one being written now). An archive that
    never got a program (a run that failed while starting) is no run: it is replaced. Returns the outermost folder
    that creating the run will make (``first_missing_folder``)."""
    check_output_path(run_dir, folder=True, what="run")
    if (run_dir / "archive.sqlite").exists() and not never_ran(run_dir):
        raise EvorankError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    return first_missing_folder(run_dir)


def never_ran(run_dir: Path) -> bool:
    """Whether the archive in ``run_dir`` holds no program and no process is writing it."""
    from evorank.archive import RunStore
    from evorank.evolve.inspection.queries import writer_pid

    if writer_pid(run_dir) is not None:
        return False
    try:
        with RunStore.open(run_dir, readonly=True) as store:
            return store.count() == 0
    except Exception:  # unreadable: not ours to replace
        return False


def discard_unstarted_run(run_dir: Path, made: Path | None, store=None) -> bool:
    """Remove a new run that archived no program: the files a run writes, then the folders from ``run_dir`` up to
    ``made`` (what creating the run made) where they are left empty. ``store``: the run's archive if it is open (it
    is closed here). Returns whether the run was removed; a run with a program is left alone."""
    if store is not None:
        if store.count() > 0:
            return False
        store.close()
    elif (run_dir / "archive.sqlite").exists() and not never_ran(run_dir):
        return False
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if made is not None:
        for folder in [run_dir, *run_dir.parents]:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            if folder == made:
                break
    return True
