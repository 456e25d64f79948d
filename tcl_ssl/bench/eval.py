"""Evaluation speed: kNN and the fast linear probe on a large feature bank (``tcl-ssl bench eval``).

The features are synthetic (a Gaussian mixture, one component per class, noisy enough that
neither protocol is perfect) so that the benchmark needs no dataset; the protocols' cost does
not depend on where features come from. Measured:

- kNN (k = 200, t = 0.1), bank ``(N, D)`` against ``Q`` queries: :func:`knn_classify` (chunked)
  against lightly's ``knn_predict`` called on all queries at once; time, peak extra memory, and
  the share of identical top-1 predictions;
- the fast linear probe: :func:`select_linear_probe` (the whole weight-decay search) and one fit
  at the chosen weight decay, against scikit-learn's ``LogisticRegression`` (lbfgs) with the
  equivalent ``C``; time and query top-1 of both.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

import torch
from torch.nn import functional as F

from tcl_ssl.bench.loss import peak_extra_memory
from tcl_ssl.evaluation.knn import knn_classify, topk_accuracy
from tcl_ssl.evaluation.linear import fit_linear_probe, probe_predictions, select_linear_probe


def mixture(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` features ``(n, dim)`` around fixed random class centres, and their labels ``(n,)``."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(12345))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return centres[labels] + spread * torch.randn(n, dim, generator=gen), labels


def _timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def run(bank: int = 50_000, queries: int = 10_000, dim: int = 512, classes: int = 10, spread: float = 8.0,
        device: str = "cpu") -> dict:
    """Measure both protocols; returns a dict of times (s), peaks (bytes) and accuracies (percent)."""
    from lightly.utils.benchmarking import knn_predict
    from sklearn.linear_model import LogisticRegression

    device = torch.device(device)
    train_x, train_y = mixture(bank, dim, classes, spread, seed=0)
    query_x, query_y = mixture(queries, dim, classes, spread, seed=1)
    train_unit, query_unit = F.normalize(train_x, dim=1).to(device), F.normalize(query_x, dim=1).to(device)
    out: dict = {"bank": bank, "queries": queries, "dim": dim, "classes": classes, "device": str(device)}

    ours, out["knn_ours_s"] = _timed(lambda: knn_classify(train_unit, train_y, query_unit, classes))
    out["knn_ours_peak"] = peak_extra_memory(lambda: knn_classify(train_unit, train_y, query_unit, classes), device)
    bank_t = train_unit.T.contiguous()
    labels_dev = train_y.to(device)
    theirs, out["knn_lightly_s"] = _timed(lambda: knn_predict(query_unit, bank_t, labels_dev, classes, 200, 0.1))
    out["knn_lightly_peak"] = peak_extra_memory(lambda: knn_predict(query_unit, bank_t, labels_dev, classes, 200, 0.1), device)
    out["knn_top1"] = topk_accuracy(ours.cpu(), query_y, ks=(1,))["top1"]
    out["knn_same_top1"] = 100.0 * (ours[:, 0].cpu() == theirs[:, 0].cpu()).float().mean().item()

    val_x, val_y = mixture(max(queries // 2, 1), dim, classes, spread, seed=2)
    x, vx, qx = train_x.to(device), val_x.to(device), query_x.to(device)
    chosen, out["linear_search_s"] = _timed(lambda: select_linear_probe((x, train_y), (vx, val_y), classes, device=device))
    weight_decay = chosen.weight_decay
    probe, out["linear_fit_s"] = _timed(lambda: fit_linear_probe(x, train_y.to(device), classes, weight_decay))
    out["linear_weight_decay"] = weight_decay
    out["linear_top1"] = topk_accuracy(probe_predictions(probe, qx, top=1).cpu(), query_y, ks=(1,))["top1"]
    mean, std = probe.mean.cpu(), probe.std.cpu()
    reference = LogisticRegression(C=1.0 / (weight_decay * bank), max_iter=1000)
    _, out["sklearn_fit_s"] = _timed(lambda: reference.fit(((train_x - mean) / std).numpy(), train_y.numpy()))
    predicted = torch.from_numpy(reference.predict(((query_x - mean) / std).numpy()))
    out["sklearn_top1"] = 100.0 * (predicted == query_y).float().mean().item()
    return out


def format_report(r: dict) -> str:
    mib = 2**20
    return "\n".join([
        f"bank {r['bank']:,} x {r['dim']}, {r['queries']:,} queries, {r['classes']} classes, on {r['device']}; "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "",
        "| protocol | implementation | time s | peak extra memory MiB | query top-1 % |",
        "|---|---|---:|---:|---:|",
        f"| kNN (k 200) | tcl-ssl, chunked | {r['knn_ours_s']:.2f} | {r['knn_ours_peak'] / mib:,.0f} | {r['knn_top1']:.2f} |",
        f"| kNN (k 200) | lightly knn_predict, all queries at once | {r['knn_lightly_s']:.2f} | "
        f"{r['knn_lightly_peak'] / mib:,.0f} | (same top-1 on {r['knn_same_top1']:.2f} %) |",
        f"| linear | tcl-ssl, L-BFGS, search over 5 weight decays | {r['linear_search_s']:.2f} | | |",
        f"| linear | tcl-ssl, L-BFGS, one fit (wd {r['linear_weight_decay']:g}) | {r['linear_fit_s']:.2f} | | {r['linear_top1']:.2f} |",
        f"| linear | scikit-learn LogisticRegression, same objective | {r['sklearn_fit_s']:.2f} | | {r['sklearn_top1']:.2f} |",
        "",
        f"kNN: tcl-ssl / lightly time = {r['knn_ours_s'] / r['knn_lightly_s']:.2f}, "
        f"memory = {r['knn_ours_peak'] / max(r['knn_lightly_peak'], 1):.2f}",
        f"linear: scikit-learn / tcl-ssl time = {r['sklearn_fit_s'] / r['linear_fit_s']:.1f}x (one fit), "
        f"{r['sklearn_fit_s'] / r['linear_search_s']:.1f}x (whole search); top-1 difference "
        f"{r['linear_top1'] - r['sklearn_top1']:+.2f} points",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcl-ssl bench eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--spread", type=float, default=8.0, help="noise per dimension around the class centres")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(format_report(run(args.bank, args.queries, args.dim, args.classes, args.spread, args.device)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
