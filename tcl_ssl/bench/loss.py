"""Speed and memory of the TCL loss against its peers (``tcl-ssl bench loss``).

For each batch size ``N`` (embeddings ``(N, D)``, ``num_labels`` classes) one forward +
backward pass of each loss is timed (the minimum over ``repeats`` runs, after a warm-up run)
and its peak *extra* memory is measured (memory allocated during forward + backward beyond
the inputs, the gradient of the embeddings included). The losses:

- ``tcl``: :func:`tcl_ssl.loss.tcl_loss` with labels on the dense path (one ``N x N`` tile);
- ``tcl-tiled``: the same on the tiled path (:func:`tcl_ssl.loss_core.tiled_blocks`, which
  ``TCLLoss`` uses above ``N x N = 2**21``), also checked against the dense path;
- ``supcon``: pytorch-metric-learning's ``SupConLoss`` with the same labels;
- ``official``: the official TCL formula written naively (dense ``exp()``/``sum()`` with
  masks, :func:`official_formula`), also the check that ``tcl`` computes the same loss;
- ``ntxent``: lightly's ``NTXentLoss`` on two views of ``N / 2`` (no labels);
- ``floor``: ``(z @ z.T).sum()``, the matrix products any of these losses needs;
- ``floor-tiled``: the same three matrix products (``S = Z Z^T``, ``S Z``, ``S^T Z``) in the
  tiles of ``tcl-tiled``, never holding ``N x N``: the floor at any size.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. On
CPU, torch keeps no allocation statistics (and ``tracemalloc`` does not see its buffers), so
the run is recorded with ``torch.profiler`` (``profile_memory=True``) and the allocation and
free events are replayed in time order; the peak of the running sum is the peak extra
memory. :func:`check_memory_tracker` validates this on known allocations before a run.
Memory is reported in MiB and in units of one ``N x N`` float32 matrix (``4 N^2`` bytes).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightly.loss import NTXentLoss
from pytorch_metric_learning.losses import SupConLoss
from torch import Tensor
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from tcl_ssl.loss import tcl_loss
from tcl_ssl.loss_core import tiled_blocks
from tcl_ssl.safe_io import write_json

__all__ = [
    "LOSSES",
    "official_formula",
    "peak_extra_memory",
    "check_memory_tracker",
    "run",
    "format_table",
    "main",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

#: benchmarked losses, in table order, with the name printed for each
LOSSES: dict[str, str] = {
    "tcl": "TCLLoss dense",
    "tcl-tiled": "TCLLoss tiled",
    "supcon": "PML SupConLoss",
    "official": "official formula",
    "ntxent": "lightly NTXentLoss",
    "floor": "floor z@z.T",
    "floor-tiled": "floor, tiled products",
    "compiled": "official, torch.compile",
}
#: losses run by default; ``compiled`` (the official formula through ``torch.compile``, the
#: alternative to a hand-written backward) is opt-in: it compiles for every new size
DEFAULT_LOSSES = ("tcl", "tcl-tiled", "supcon", "official", "ntxent", "floor", "floor-tiled")


def official_formula(
    z: Tensor, labels: Tensor, temperature: float, k1: float, k2: float, is_anchor: Tensor | None = None
) -> Tensor:
    """TCL as the official implementation writes it: dense masks and ``exp()``/``sum()``.

    Args:
        z: ``(N, D)`` embeddings (normalised here); labels: ``(N,)`` group ids.
        is_anchor: ``(N,)`` bool, which samples are anchors (default all); the others only
            serve as positives/negatives of the anchors (like memory-bank entries).

    Returns:
        Mean ``L_i`` over the anchors that have a positive (scalar).
    """
    z = F.normalize(z, dim=1)
    sim = z @ z.T
    not_self = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    pos = (labels[:, None] == labels[None, :]) & not_self
    neg = labels[:, None] != labels[None, :]
    exp_logits = torch.exp(sim / temperature)
    denom = (exp_logits * pos).sum(1) + k1 * (torch.exp(-sim) * pos).sum(1) + k2 * (exp_logits * neg).sum(1)
    log_prob = sim / temperature - torch.log(denom)[:, None]
    num_pos = pos.sum(1)
    has_pos = num_pos > 0
    if is_anchor is not None:
        has_pos = has_pos & is_anchor
    return (-(log_prob * pos).sum(1)[has_pos] / num_pos[has_pos]).mean()


def _loss_functions(temperature: float, k1: float, k2: float) -> dict[str, LossFn]:
    supcon = SupConLoss(temperature=temperature)
    ntxent = NTXentLoss(temperature=temperature)
    compiled_official = torch.compile(official_formula, dynamic=False)

    def ntxent_two_views(z: Tensor, labels: Tensor) -> Tensor:
        half = z.shape[0] // 2
        return ntxent(z[:half], z[half : 2 * half])

    def tiled(z: Tensor, labels: Tensor) -> Tensor:
        rows, keys = tiled_blocks(z.shape[0], z.shape[0])
        return tcl_loss(z, labels, temperature, k1, k2, block_size=rows, key_block_size=keys)

    return {
        "tcl": lambda z, labels: tcl_loss(z, labels, temperature, k1, k2, block_size=z.shape[0]),
        "tcl-tiled": tiled,
        "supcon": lambda z, labels: supcon(z, labels),
        "official": lambda z, labels: official_formula(z, labels, temperature, k1, k2),
        "ntxent": ntxent_two_views,
        "floor": lambda z, labels: (z @ z.T).sum(),
        "floor-tiled": lambda z, labels: _TiledProducts.apply(z),
        "compiled": lambda z, labels: compiled_official(z, labels, temperature, k1, k2),
    }


class _TiledProducts(torch.autograd.Function):
    """The matrix products of the tiled loss without its arithmetic: for each block of rows
    ``S_b = Z_b Z^T``, then ``S_b Z`` and ``S_b^T Z_b`` into the gradient (returns ``0``)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        rows, _ = tiled_blocks(z.shape[0], z.shape[0])
        grad = torch.zeros_like(z)
        for start in range(0, z.shape[0], rows):
            block = z[start : start + rows]
            products = block @ z.T
            grad[start : start + rows].addmm_(products, z)
            grad.addmm_(products.T, block)
        ctx.save_for_backward(grad)
        return z.new_zeros(())

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (grad,) = ctx.saved_tensors
        return grad * grad_output


def _leaf(z: Tensor) -> Tensor:
    """A fresh leaf copy of ``z`` that requires grad (made outside the measured region)."""
    return z.detach().clone().requires_grad_(True)


def _forward_backward(fn: LossFn, leaf: Tensor, labels: Tensor) -> Tensor:
    """One forward + backward pass; returns the detached loss (``leaf.grad`` holds dL/dz)."""
    loss = fn(leaf, labels)
    loss.backward()
    return loss.detach()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_peak_bytes(work: Callable[[], object]) -> int:
    """Peak of the running sum of torch CPU allocations (bytes) while ``work()`` runs."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    # Raw events: every allocation and free is its own "[memory]" event with a signed size
    # (the per-op FunctionEvents net out temporaries freed inside an op).
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_extra_memory(work: Callable[[], object], device: torch.device) -> int:
    """Peak memory (bytes) allocated by ``work()`` beyond what was allocated before it."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        work()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_bytes(work)


def _measure_memory(fn: LossFn, z: Tensor, labels: Tensor, device: torch.device) -> tuple[int, tuple[Tensor, Tensor]]:
    """Peak extra memory (bytes) of one forward + backward pass, and its ``(loss, dL/dz)``."""
    leaf = _leaf(z)
    outputs: list[Tensor] = []
    peak = peak_extra_memory(lambda: outputs.append(_forward_backward(fn, leaf, labels)), device)
    assert leaf.grad is not None
    return peak, (outputs[0], leaf.grad)


def check_memory_tracker(device: torch.device, n: int = 512) -> None:
    """Raise ``RuntimeError`` unless :func:`peak_extra_memory` measures known allocations.

    The probe holds two ``(n, n)`` float32 buffers at once, frees one, allocates a third:
    the peak is ``8 n^2`` bytes.
    """

    def probe() -> None:
        a = torch.ones(n, n, device=device)
        b = torch.exp(a)
        del a
        c = torch.neg(b)
        del b, c

    expected = 2 * 4 * n * n
    measured = peak_extra_memory(probe, device)
    if abs(measured - expected) > 1024:  # a few bytes of bookkeeping are fine
        raise RuntimeError(f"memory tracker on {device} measured {measured} bytes for a known peak of {expected}")


def _default_repeats(size: int) -> int:
    return 5 if size <= 1024 else 3 if size <= 4096 else 2


def run(
    sizes: Sequence[int] = (1024, 4096, 16384),
    dim: int = 128,
    num_labels: int = 10,
    device: str | torch.device | None = None,
    repeats: int | None = None,
    losses: Sequence[str] = DEFAULT_LOSSES,
    max_size: dict[str, int] | None = None,
    temperature: float = 0.1,
    k1: float = 5000.0,
    k2: float = 1.0,
    seed: int = 0,
) -> list[dict]:
    """Time forward + backward and measure peak extra memory of each loss at each size.

    Args:
        sizes: batch sizes ``N`` (even, for the two NT-Xent views).
        dim: embedding width ``D``.
        num_labels: classes the labels are drawn from (uniformly).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA if available.
        repeats: timed runs per case (the minimum is kept); default 5 up to ``N = 1024``,
            3 up to 4096, 2 above. One extra untimed run measures memory and warms up.
        losses: keys of :data:`LOSSES` to run.
        max_size: skip a loss above this ``N`` (e.g. ``{"official": 4096}``).
        temperature, k1, k2: TCL's hyper-parameters (``temperature`` for all losses).
        seed: seed of the random embeddings and labels.

    Returns:
        One dict per (size, loss) that ran, in order: ``size``, ``dim``, ``loss``, ``name``,
        ``device``, ``threads``, ``repeats``, ``seconds`` (best fwd+bwd), ``peak_bytes`` (peak
        extra memory), ``peak_nxn`` (in ``4 N^2`` bytes), ``value`` (the loss). The ``tcl``
        and ``tcl-tiled`` rows also have ``official_loss_diff`` and ``official_grad_diff``:
        absolute difference of the loss and max absolute difference of ``dL/dz`` from the
        official formula, and ``official_grad_scale``, the official formula's max ``|dL/dz|``
        (``nan`` if it did not run); ``tcl-tiled`` has ``dense_loss_diff`` and
        ``dense_grad_diff``, the same from ``tcl``, when it ran.
    """
    unknown = [name for name in [*losses, *(max_size or {})] if name not in LOSSES]
    if unknown:
        raise ValueError(f"unknown losses {unknown}; choose from {list(LOSSES)}")
    bad_sizes = [n for n in sizes if n < 2 or n % 2]
    if bad_sizes:
        raise ValueError(f"sizes must be even and >= 2, got {bad_sizes}")
    if dim < 1 or num_labels < 1:
        raise ValueError(f"dim and num_labels must be >= 1, got dim={dim}, num_labels={num_labels}")
    if repeats is not None and repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    check_memory_tracker(dev)
    functions = _loss_functions(temperature, k1, k2)
    limits = max_size or {}
    rows: list[dict] = []
    for size in sizes:
        gen = torch.Generator().manual_seed(seed + size)
        z = torch.randn(size, dim, generator=gen).to(dev)
        labels = torch.randint(0, num_labels, (size,), generator=gen).to(dev)
        count = repeats if repeats is not None else _default_repeats(size)
        active = [name for name in losses if size <= limits.get(name, math.inf)]
        results: dict[str, tuple[Tensor, Tensor]] = {}
        peaks: dict[str, int] = {}
        for name in active:  # memory run, also the warm-up
            peaks[name], results[name] = _measure_memory(functions[name], z, labels, dev)
        best = {name: math.inf for name in active}
        for _ in range(count):  # round robin, so that load changes hit every loss alike
            for name in active:
                leaf = _leaf(z)
                _synchronize(dev)
                start = time.perf_counter()
                _forward_backward(functions[name], leaf, labels)
                _synchronize(dev)
                best[name] = min(best[name], time.perf_counter() - start)
        for name in active:
            rows.append(
                {
                    "size": size,
                    "dim": dim,
                    "loss": name,
                    "name": LOSSES[name],
                    "device": str(dev),
                    "threads": torch.get_num_threads(),
                    "repeats": count,
                    "seconds": best[name],
                    "peak_bytes": peaks[name],
                    "peak_nxn": peaks[name] / (4.0 * size * size),
                    "value": float(results[name][0]),
                }
            )
        _add_checks([row for row in rows if row["size"] == size], results)
    return rows


#: the TCL rows, each checked against the official formula, and the tiled one against the dense
TCL_ROWS = ("tcl", "tcl-tiled")


def _differences(result: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """``|loss - reference loss|`` and ``max |dL/dz - reference dL/dz|``."""
    return float((result[0] - reference[0]).abs()), float((result[1] - reference[1]).abs().max())


def _add_checks(group: list[dict], results: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Add to the TCL rows of one size their differences from the official formula
    (``official_loss_diff``, ``official_grad_diff``, ``official_grad_scale``; ``nan`` when it
    did not run) and, for ``tcl-tiled``, from the dense path (``dense_loss_diff``,
    ``dense_grad_diff``)."""
    for row in group:
        if row["loss"] not in TCL_ROWS:
            continue
        result = results[row["loss"]]
        row["official_loss_diff"] = row["official_grad_diff"] = row["official_grad_scale"] = math.nan
        if "official" in results:
            row["official_loss_diff"], row["official_grad_diff"] = _differences(result, results["official"])
            row["official_grad_scale"] = float(results["official"][1].abs().max())
        if row["loss"] == "tcl-tiled" and "tcl" in results:
            row["dense_loss_diff"], row["dense_grad_diff"] = _differences(result, results["tcl"])


def _floor_of(group: Sequence[dict]) -> dict | None:
    """The floor row of one size: ``floor``, else ``floor-tiled``."""
    by_loss = {row["loss"]: row for row in group}
    return by_loss.get("floor", by_loss.get("floor-tiled"))


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`run`'s rows: time, its ratio to the floor (``floor``, else
    ``floor-tiled``, at the same ``N``), peak memory, and the TCL rows' checks."""
    header = f"{'N':>6}  {'loss':<22} {'fwd+bwd ms':>11} {'x floor':>8} {'peak MiB':>10} {'peak NxN':>9}"
    lines = [header, "-" * len(header)]
    sizes = list(dict.fromkeys(row["size"] for row in rows))
    for size in sizes:
        group = [row for row in rows if row["size"] == size]
        floor = _floor_of(group)
        for row in group:
            ratio = f"{row['seconds'] / floor['seconds']:8.2f}" if floor else f"{'-':>8}"
            lines.append(
                f"{size:>6}  {row['name']:<22} {1e3 * row['seconds']:>11.1f} {ratio} "
                f"{row['peak_bytes'] / 2**20:>10.1f} {row['peak_nxn']:>9.3f}"
            )
        for row in group:
            if not math.isnan(row.get("official_loss_diff", math.nan)):
                lines.append(
                    f"{'':>6}  {row['name']} vs official formula: |loss diff| = {row['official_loss_diff']:.2e}, "
                    f"max |grad diff| = {row['official_grad_diff']:.2e} "
                    f"(max |grad| = {row['official_grad_scale']:.2e})"
                )
            if "dense_loss_diff" in row:
                lines.append(
                    f"{'':>6}  {row['name']} vs dense: |loss diff| = {row['dense_loss_diff']:.2e}, "
                    f"max |grad diff| = {row['dense_grad_diff']:.2e}"
                )
    return "\n".join(lines)


def _max_size_item(text: str) -> tuple[str, int]:
    name, _, value = text.partition("=")
    if name not in LOSSES or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected LOSS=N with LOSS in {list(LOSSES)} (e.g. official=4096), got {text!r}"
        )
    return name, int(value)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``tcl-ssl bench loss`` (added to ``parser`` if given)."""
    parser = parser or argparse.ArgumentParser(
        prog="tcl-ssl bench loss",
        description="Time forward+backward and peak memory of TCLLoss against its peers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", default="1024,4096,16384", help="batch sizes N")
    parser.add_argument("--dim", type=int, default=128, help="embedding width D")
    parser.add_argument("--num-labels", type=int, default=10)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default by N)")
    parser.add_argument("--losses", default=",".join(DEFAULT_LOSSES), help=f"losses to run, from {','.join(LOSSES)}")
    parser.add_argument(
        "--max-n",
        action="append",
        default=[],
        metavar="LOSS=N",
        type=_max_size_item,
        help="skip LOSS above batch size N (repeatable), e.g. --max-n official=4096",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--k1", type=float, default=5000.0)
    parser.add_argument("--k2", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON")
    return parser


#: acceptance targets: (size, row, what, limit); ``what`` is another row (time ratio), ``nxn``
#: (peak extra memory in N x N float32 matrices) or ``gib`` (peak extra memory in GiB)
TARGETS = (
    (4096, "tcl", "floor", 1.2),
    (4096, "tcl", "supcon", 0.5),
    (4096, "tcl", "official", 0.35),
    (16384, "tcl-tiled", "nxn", 0.25),
    (65536, "tcl-tiled", "gib", 8.0),
)


def _targets(rows: Sequence[dict]) -> list[str]:
    """Pass/fail lines for the :data:`TARGETS` whose rows ran."""
    lines = []
    for size, loss, what, limit in TARGETS:
        by_loss = {row["loss"]: row for row in rows if row["size"] == size}
        if loss not in by_loss:
            continue
        row = by_loss[loss]
        if what == "nxn":
            label, value = f"{LOSSES[loss]} peak extra memory (N x N float32)", row["peak_nxn"]
        elif what == "gib":
            label, value = f"{LOSSES[loss]} peak extra memory (GiB)", row["peak_bytes"] / 2**30
        elif what in by_loss:
            label, value = f"{LOSSES[loss]} / {LOSSES[what]} time", row["seconds"] / by_loss[what]["seconds"]
        else:
            continue
        verdict = "ok" if value <= limit else "MISSED"
        lines.append(f"N={size}: {label} = {value:.2f} (target <= {limit:g}): {verdict}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl bench loss``: run the benchmark and print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--sizes takes comma-separated integers, got {args.sizes!r}")
    losses = [v.strip() for v in args.losses.split(",") if v.strip()]
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        rows = run(
            sizes,
            args.dim,
            args.num_labels,
            args.device,
            args.repeats,
            losses,
            dict(args.max_n),
            args.temperature,
            args.k1,
            args.k2,
        )
    except ValueError as error:
        parser.error(str(error))
    first = rows[0] if rows else {"device": "-", "threads": "-"}
    print(
        f"TCL loss benchmark: D={args.dim}, {args.num_labels} labels, t={args.temperature:g}, "
        f"k1={args.k1:g}, k2={args.k2:g}, device={first['device']}, threads={first['threads']}; "
        "time = min over repeats of forward+backward; peak = extra memory during it"
    )
    print(format_table(rows))
    if args.json is not None:
        write_json(args.json, rows)
    for line in _targets(rows):
        print(line)
    print(
        f"total {time.perf_counter() - started:.0f} s; load average (1 min) "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
