"""Whether a run directory may be written by a planned run: the one place that compares the run
a directory holds with the run planned there (``tcl-ssl pretrain``, ``compare`` and ``sweep``).

Rules (docs/pretraining.md, "Run directories"):

- a **new** run may use a directory that holds no run, or an unfinished run of the same
  configuration (every option that can change the figures equal); a directory that holds a
  run of another configuration is refused before anything is written, naming each option that
  differs;
- a **resume** may change every option but those that make the run what it is:
  :data:`RESUME_KEEPS` (the data and its splits, the backbone, its stem, the method and whether
  it uses labels); it continues in the checkpoint's own directory (wherever that is now) or in a
  new ``out`` that holds no run yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcl_ssl.config import ConfigError, PretrainConfig
from tcl_ssl.processes import is_process_zero
from tcl_ssl.runs.record import RunRecord, as_json, read_record, resolve_checkpoint, run_dir_of

__all__ = [
    "RESUME_KEEPS",
    "changed_options",
    "check_resume",
    "check_reuse",
    "check_same_configuration",
    "describe_changes",
    "holds_run",
]

#: the options a resumed run keeps: its data, its network and what it learns from
RESUME_KEEPS: tuple[str, ...] = (*PretrainConfig.group_keys("data"), "backbone", "stem", "method", "supervised")


def changed_options(
    held: PretrainConfig, planned: PretrainConfig, keys: Iterable[str] | None = None
) -> dict[str, tuple[Any, Any]]:
    """The options whose values differ between the run a directory holds and the planned one:
    ``{key: (held value, planned value)}``, compared as JSON.

    Args:
        held: the configuration in the directory's ``config.json`` (resolved when it was written).
        planned: the planned configuration; its unset precision and stem (chosen by the device when
            a run starts) count as the held run's.
        keys: the options compared (default: every option that can change a run's figures).
    """
    planned = planned.resolved().replace(
        precision=planned.trainer.precision or held.trainer.precision,
        stem=planned.model.stem or held.model.stem,
    )
    if keys is None:
        keys = [key for key, info in PretrainConfig.options().items() if info.spec.affects_results]
    before, after = as_json(held.flat()), as_json(planned.flat())
    return {key: (before[key], after[key]) for key in keys if before[key] != after[key]}


def describe_changes(changed: dict[str, tuple[Any, Any]], planned: str = "planned") -> str:
    """``key: <held> there, <planned> planned`` for each changed option, comma-separated."""
    return ", ".join(f"{key}: {was!r} there, {now!r} {planned}" for key, (was, now) in changed.items())


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds (part of) a run: a ``config.json``, a ``summary.json`` or a checkpoint."""
    return any((directory / name).is_file() for name in ("config.json", "summary.json", "checkpoints/last.ckpt"))


def _record(directory: Path) -> RunRecord | None:
    return read_record(directory) if (directory / "config.json").is_file() else None


def check_same_configuration(directory: Path, held: PretrainConfig, planned: PretrainConfig) -> None:
    """Refuse a new run in ``directory``, which holds the run ``held``, unless ``planned`` has
    the same configuration (every option that can change the figures equal).

    Raises:
        ConfigError: naming the directory, each option that differs and what to do.
    """
    changed = changed_options(held, planned)
    if changed:
        raise ConfigError(
            f"{directory} holds a run of another configuration ({describe_changes(changed)}); "
            f"give another --out, or delete {directory}"
        )


def check_resume(held: RunRecord, planned: PretrainConfig, where: Path) -> None:
    """Refuse a resume of the run ``held`` (read from ``where``) that would change one of
    :data:`RESUME_KEEPS`.

    Raises:
        ConfigError: naming the directory, each such option (held and given values) and what to do.
    """
    changed = changed_options(held.config, planned, RESUME_KEEPS)
    if changed:
        raise ConfigError(
            f"{where} holds a run of another configuration ({describe_changes(changed, 'given')}): a resume keeps "
            "the run's data, backbone, stem, method and supervised; start a new run (without --resume) with another --out, "
            f"or delete {where}"
        )


def check_reuse(config: PretrainConfig) -> None:
    """Refuse, before anything is written, a run that would overwrite a run of another
    configuration (see the module's rules). ``config`` is checked (:func:`tcl_ssl.preflight.check_run`).

    Only process 0 decides: it checks before it starts the other processes of a multi-process
    run, which then find the files it has begun to write.

    Raises:
        ConfigError: naming the directory, each option that differs and what to do.
    """
    if not is_process_zero():
        return
    target = config.run_dir()
    if config.run.resume is not None:
        source = run_dir_of(resolve_checkpoint(config.run.resume))
        held = _record(source)
        if held is not None:
            check_resume(held, config, source)
        if target.resolve() != source and holds_run(target):
            raise ConfigError(
                f"{target} already holds a run, and resuming {source} there would overwrite it; give an "
                f"--out that holds no run, or continue that run with --resume {target}"
            )
        return
    held = _record(target)
    if held is not None:
        check_same_configuration(target, held.config, config)
    if (target / "checkpoints" / "last.ckpt").is_file():
        raise ConfigError(
            f"{target} holds a checkpoint (checkpoints/last.ckpt) that a new run would overwrite; resume it "
            f"(--resume {target}), give another --out, or delete {target}"
        )
