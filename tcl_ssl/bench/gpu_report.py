"""The report of the GPU check (``scripts/gpu_check.sh``): every step's exit status, time and
figures in one ``report.json`` and one ``report.md``.

The script runs each step into ``OUT/steps/<name>/``: ``command.txt`` (the command line),
``output.log`` (its stdout and stderr), ``status.json`` (``exit_code``, ``seconds`` of wall
time, ``timeout_s``; exit code 124 is a step stopped by its timeout or skipped because the
check's budget was spent) and the step's own result file:

- ``environment``: ``environment.json`` (:func:`environment`: torch, CUDA, the GPU, nvidia-smi);
- ``pytest-cuda``: ``junit.xml`` of ``pytest -m cuda``;
- ``bench-loss``, ``bench-augment``, ``bench-train-32``, ``bench-train-224``: ``result.json``
  of the benchmark's ``--json`` (a list of row dicts, or ``{"rows": [...], ...}``);
- ``pretrain``: the run directory ``run/`` with its ``summary.json``.

Two entries, both used by the script::

    python -m tcl_ssl.bench.gpu_report environment PATH   # write environment.json
    python -m tcl_ssl.bench.gpu_report assemble OUT       # write OUT/report.json, OUT/report.md

Throughputs are images per second (one image = one sample, giving two views); times in
milliseconds or seconds as the column says; memory in MiB (2**20 bytes). Training throughputs are
also given as a ratio to :data:`ANCHOR_IMAGES_PER_S`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcl_ssl.safe_io import write_json, write_text

__all__ = ["ANCHOR_IMAGES_PER_S", "ANCHOR", "STEPS", "environment", "build_report", "format_markdown", "main"]

#: images/s of SimCLR with a ResNet-18 on CIFAR-10 at batch 512 on one A100 (issue 20's anchor)
ANCHOR_IMAGES_PER_S = 4200.0
ANCHOR = "SimCLR ResNet-18, CIFAR-10, batch 512, one A100: about 4,200 images/s"
#: the steps of the check, in the order the script runs them
STEPS = (
    "environment",
    "pytest-cuda",
    "bench-loss",
    "bench-augment",
    "bench-train-32",
    "bench-train-224",
    "synthetic-data",
    "pretrain",
)
MIB = 2**20


def environment() -> dict[str, Any]:
    """What the check ran on: Python, torch, CUDA and cuDNN versions, the GPU (name, capability,
    memory in MiB) or ``None``, the CPU count, and ``nvidia-smi``'s output (``None`` without it)."""
    import torch  # deferred: `environment` is the only part that needs torch

    gpu = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        gpu = {
            "name": properties.name,
            "capability": f"{properties.major}.{properties.minor}",
            "memory_mib": properties.total_memory / MIB,
            "count": torch.cuda.device_count(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    smi = None
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        smi = done.stdout + done.stderr
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": gpu,
        "cpu_count": os.cpu_count(),
        "nvidia_smi": smi,
    }


# ----------------------------------------------------------------------------- reading the steps


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _rows(content: Any, where: Path) -> list[dict]:
    """The row dicts of a benchmark's ``--json``: a list, or a dict's ``rows``."""
    rows = content.get("rows") if isinstance(content, dict) else content
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{where} holds no list of rows")
    return rows


def _step_status(directory: Path) -> dict[str, Any]:
    status = _read_json(directory / "status.json")
    command = directory / "command.txt"
    status["command"] = command.read_text().strip() if command.is_file() else None
    status["ok"] = status.get("exit_code") == 0
    return status


def _tests(junit: Path) -> dict[str, Any]:
    """Counts and each test's outcome from pytest's JUnit XML."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = []
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed" if child.tag == "failure" else "error"
                elif child.tag == "skipped":
                    outcome = "skipped"
            cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    counts = {key: sum(case["outcome"] == key for case in cases) for key in ("passed", "failed", "error", "skipped")}
    return {"tests": len(cases), **counts, "cases": cases}


def _loss(rows: list[dict]) -> list[dict]:
    """One dict per (N, loss): ``ms`` (forward + backward), ``peak_mib``, ``vs_floor`` (its time
    over the floor's at that N: ``floor``, else ``floor-tiled``; ``None`` without either)."""
    floor = {row["size"]: row["seconds"] for row in rows if row["loss"] == "floor-tiled"}
    floor |= {row["size"]: row["seconds"] for row in rows if row["loss"] == "floor"}
    return [
        {
            "size": row["size"],
            "loss": row["loss"],
            "name": row.get("name", row["loss"]),
            "device": row.get("device"),
            "ms": 1e3 * row["seconds"],
            "peak_mib": row["peak_bytes"] / MIB,
            "vs_floor": row["seconds"] / floor[row["size"]] if row["size"] in floor else None,
        }
        for row in rows
    ]


def _augment(rows: list[dict]) -> list[dict]:
    keys = ("image_size", "pipeline", "device", "images_per_s", "vs_lightly", "vs_lightly_loader")
    return [{key: row.get(key) for key in keys} for row in rows]


def _train(rows: list[dict]) -> list[dict]:
    """Each bench train row with ``vs_anchor`` (its images/s over :data:`ANCHOR_IMAGES_PER_S`)
    and ``peak_mib``."""
    keys = ("row", "image_size", "batch_size", "precision", "stem", "device", "compile", "channels_last")
    return [
        {key: row.get(key) for key in keys}
        | {
            "images_per_s": row["images_per_s"],
            "vs_anchor": row["images_per_s"] / ANCHOR_IMAGES_PER_S,
            "peak_mib": row["peak_bytes"] / MIB if row.get("peak_bytes") is not None else None,
            "vs_lightly": row.get("vs_lightly"),
            "vs_floor": row.get("vs_floor"),
        }
        for row in rows
    ]


def _pretrain(summary: dict) -> dict[str, Any]:
    rate = summary.get("images_per_second")
    return {
        "method": summary.get("method"),
        "epochs": summary.get("epochs"),
        "splits": summary.get("splits"),
        "images_per_second": rate,
        "vs_anchor": rate / ANCHOR_IMAGES_PER_S if rate else None,
        "train_seconds": summary.get("train_seconds"),
        "wall_seconds": summary.get("wall_seconds"),
        "test_knn_top1": (summary.get("test") or {}).get("knn_top1"),
        "peak_cuda_mib": (summary.get("peak_memory") or {}).get("cuda_allocated_mib"),
    }


def build_report(out: str | Path) -> dict[str, Any]:
    """Read every step under ``out/steps`` into one dict (see the module docstring).

    Returns:
        ``check`` (the script's ``check.json``: mode, budget, commit), ``anchor``, ``steps``
        (one dict per step: ``name``, ``exit_code``, ``seconds``, ``timeout_s``, ``ok``,
        ``command``), ``failed`` (names), ``problems`` (result files that could not be read),
        and the figures: ``environment``, ``tests``, ``loss``, ``augment``, ``train``,
        ``pretrain`` (``None`` where the step left none).

    Raises:
        ValueError: if ``out/steps`` holds no step.
    """
    out = Path(out)
    step_dirs = sorted((out / "steps").glob("*/status.json"))
    if not step_dirs:
        raise ValueError(
            f"no steps under {str(out / 'steps')!r} (expected <name>/status.json from scripts/gpu_check.sh)"
        )
    order = {name: i for i, name in enumerate(STEPS)}
    names = sorted((path.parent.name for path in step_dirs), key=lambda name: (order.get(name, len(STEPS)), name))
    steps, problems = [], []
    for name in names:
        status = {"name": name} | _step_status(out / "steps" / name)
        steps.append(status)
    report: dict[str, Any] = {
        "check": _read_json(out / "check.json") if (out / "check.json").is_file() else None,
        "anchor": {"images_per_s": ANCHOR_IMAGES_PER_S, "what": ANCHOR},
        "steps": steps,
        "failed": [step["name"] for step in steps if not step["ok"]],
    }
    readers = {
        "environment": ("environment", "environment.json", _read_json),
        "tests": ("pytest-cuda", "junit.xml", _tests),
        "loss": ("bench-loss", "result.json", lambda p: _loss(_rows(_read_json(p), p))),
        "augment": ("bench-augment", "result.json", lambda p: _augment(_rows(_read_json(p), p))),
        "train": (
            None,
            "result.json",
            lambda p: _train(_rows(_read_json(p), p)),
        ),
        "pretrain": ("pretrain", "run/summary.json", lambda p: _pretrain(_read_json(p))),
    }
    for key, (step, filename, read) in readers.items():
        sources = [step] if step else [name for name in names if name.startswith("bench-train-")]
        figures: Any = None
        for source in sources:
            path = out / "steps" / source / filename
            if not path.is_file():
                continue
            try:
                found = read(path)
            except (OSError, ValueError, KeyError, TypeError, ET.ParseError) as error:
                problems.append(f"{path}: {type(error).__name__}: {error}")
                continue
            figures = found if figures is None or not isinstance(found, list) else figures + found
        report[key] = figures
    report["problems"] = problems
    return report


# ----------------------------------------------------------------------------- Markdown


def _number(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: Sequence[str], align: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the machine, the steps, then one table per benchmark (see :func:`build_report`)."""
    env = report.get("environment") or {}
    gpu = env.get("gpu") or {}
    check = report.get("check") or {}
    machine = (
        f"{gpu['name']} ({_number(gpu.get('memory_mib'))} MiB, compute capability {gpu.get('capability')})"
        if gpu
        else "no GPU (CPU only)"
    )
    lines = [
        "# GPU check report",
        "",
        f"- machine: {machine}; {env.get('cpu_count', '-')} CPU cores",
        f"- torch {env.get('torch', '-')}, CUDA {env.get('cuda') or '-'}, cuDNN {env.get('cudnn') or '-'}, "
        f"Python {env.get('python', '-')}",
        f"- mode: {check.get('mode', '-')}; commit {check.get('commit', '-')}; started {check.get('started', '-')}; "
        f"budget {check.get('budget_s', '-')} s, took {_number(sum(s.get('seconds') or 0 for s in report['steps']))} s",
        f"- anchor: {report['anchor']['what']}",
        f"- failed steps: {', '.join(report['failed']) or 'none'}",
        "",
        "## Steps",
        "",
    ]
    lines += _table(
        ["step", "exit code", "seconds", "timeout s", "command"],
        ["---", "---:", "---:", "---:", "---"],
        [
            [
                s["name"],
                str(s.get("exit_code")),
                _number(s.get("seconds"), 1),
                str(s.get("timeout_s")),
                f"`{s.get('command') or ''}`",
            ]
            for s in report["steps"]
        ],
    )
    tests = report.get("tests")
    if tests:
        lines += ["", "## CUDA tests (`pytest -m cuda`)", ""]
        lines.append(
            f"{tests['tests']} tests: {tests['passed']} passed, {tests['failed']} failed, "
            f"{tests['error']} errors, {tests['skipped']} skipped"
        )
        if tests["cases"]:
            cases = [[c["name"], c["outcome"]] for c in tests["cases"]]
            lines += [""] + _table(["test", "outcome"], ["---", "---"], cases)
    loss = report.get("loss")
    if loss:
        lines += ["", "## Loss: forward + backward (`tcl-ssl bench loss`)", ""]
        lines += _table(
            ["N", "loss", "ms", "x floor", "peak MiB"],
            ["---:", "---", "---:", "---:", "---:"],
            [
                [f"{r['size']:,}", r["name"], _number(r["ms"], 1), _number(r["vs_floor"], 2), _number(r["peak_mib"], 1)]
                for r in loss
            ],
        )
    augment = report.get("augment")
    if augment:
        lines += ["", "## Augmentation, two SimCLR views (`tcl-ssl bench augment`)", ""]
        lines += _table(
            ["size", "pipeline", "device", "images/s", "x lightly per image"],
            ["---:", "---", "---", "---:", "---:"],
            [
                [
                    f"{r['image_size']} px",
                    str(r["pipeline"]),
                    str(r["device"]),
                    _number(r["images_per_s"]),
                    _number(r["vs_lightly"], 2),
                ]
                for r in augment
            ],
        )
    train = report.get("train")
    if train:
        lines += ["", "## Training, SimCLR ResNet-18 (`tcl-ssl bench train`)", ""]
        lines += _table(
            ["size", "batch", "precision", "stem", "row", "images/s", "x anchor", "peak MiB"],
            ["---:", "---:", "---", "---", "---", "---:", "---:", "---:"],
            [
                [
                    f"{r['image_size']} px",
                    str(r["batch_size"]),
                    str(r["precision"]),
                    str(r["stem"]),
                    str(r["row"]) + (", torch.compile" if r.get("compile") else ""),
                    _number(r["images_per_s"]),
                    _number(r["vs_anchor"], 2),
                    _number(r["peak_mib"]),
                ]
                for r in train
            ],
        )
    pretrain = report.get("pretrain")
    if pretrain:
        splits = pretrain.get("splits") or {}
        lines += ["", "## Pretraining run (`tcl-ssl pretrain`, synthetic CIFAR-10-sized folder)", ""]
        lines += _table(
            [
                "method",
                "epochs",
                "train images",
                "images/s",
                "x anchor",
                "train s",
                "wall s",
                "test kNN top-1",
                "peak CUDA MiB",
            ],
            ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"],
            [
                [
                    str(pretrain["method"]),
                    str(pretrain["epochs"]),
                    _number(splits.get("train")),
                    _number(pretrain["images_per_second"]),
                    _number(pretrain["vs_anchor"], 2),
                    _number(pretrain["train_seconds"], 1),
                    _number(pretrain["wall_seconds"], 1),
                    _number(pretrain["test_knn_top1"], 1),
                    _number(pretrain["peak_cuda_mib"]),
                ]
            ],
        )
    if report.get("problems"):
        lines += ["", "## Unreadable results", ""] + [f"- {problem}" for problem in report["problems"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tcl_ssl.bench.gpu_report {environment PATH | assemble OUT}``."""
    parser = argparse.ArgumentParser(prog="python -m tcl_ssl.bench.gpu_report", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("environment", help="write the environment as JSON").add_argument("path")
    commands.add_parser("assemble", help="write OUT/report.json and OUT/report.md").add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "environment":
        content = environment()
        write_json(args.path, content)
        gpu = content["gpu"]
        print(f"torch {content['torch']}, CUDA {content['cuda']}, GPU: {gpu['name'] if gpu else 'none'}")
        if content["nvidia_smi"]:
            print(content["nvidia_smi"])
        return 0
    try:
        report = build_report(args.out)
    except ValueError as error:
        parser.error(str(error))
    write_json(Path(args.out) / "report.json", report)
    markdown = format_markdown(report)
    write_text(Path(args.out) / "report.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
