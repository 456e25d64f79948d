"""Evaluation speed: kNN and the fast linear probe on a large feature bank (``tcl-ssl bench eval``).

The features are synthetic by default (a Gaussian mixture, one component per class, noisy enough
that neither protocol is perfect), so that the benchmark needs no dataset; ``--features FILE``
uses a backbone's real features instead (written by ``tcl-ssl eval --save-features``: the
train split is the bank, val chooses the weight decay, test holds the queries). kNN costs the
same on any features of that shape; the linear probe's number of iterations depends on them.
Measured:

- kNN (k = 200, t = 0.1), bank ``(N, D)`` against ``Q`` queries: :func:`knn_classify` (chunked)
  against lightly's ``knn_predict`` called on all queries at once; time, peak extra memory, and
  the share of identical top-1 predictions;
- the fast linear probe against scikit-learn's ``LogisticRegression`` (lbfgs, its default
  tolerance, which is also ours) on the same standardised features and objective: one fit at the
  chosen weight decay, and the whole search over the weight decays (largest first, each fit
  warm-started from the previous one, in both); time and query top-1.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import torch
from lightly.utils.benchmarking import knn_predict
from sklearn.linear_model import LogisticRegression
from torch.nn import functional as F

from tcl_ssl.bench.loss import peak_extra_memory
from tcl_ssl.evaluation.knn import knn_classify, topk_accuracy
from tcl_ssl.evaluation.linear import WEIGHT_DECAYS, fit_linear_probe, probe_predictions, select_linear_probe
from tcl_ssl.evaluation.run import read_features

Split = tuple[torch.Tensor, torch.Tensor]


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


def synthetic_splits(bank: int, queries: int, dim: int, classes: int, spread: float) -> dict[str, Split]:
    """Mixture features for the train (bank), val (half as many as the queries) and test splits."""
    return {
        "train": mixture(bank, dim, classes, spread, seed=0),
        "val": mixture(max(queries // 2, 1), dim, classes, spread, seed=2),
        "test": mixture(queries, dim, classes, spread, seed=1),
    }


def sklearn_search(train: Split, val: Split, mean: torch.Tensor, std: torch.Tensor) -> float:
    """scikit-learn's version of :func:`select_linear_probe` (same grid, order and warm starts);
    returns the weight decay with the best val top-1."""
    x, vx = ((train[0] - mean) / std).numpy(), ((val[0] - mean) / std).numpy()
    model = LogisticRegression(max_iter=1000, warm_start=True)
    scores = {}
    for weight_decay in sorted(WEIGHT_DECAYS, reverse=True):
        model.set_params(C=1.0 / (weight_decay * len(x))).fit(x, train[1].numpy())
        scores[weight_decay] = (model.predict(vx) == val[1].numpy()).mean()
    return max(scores, key=lambda wd: (scores[wd], wd))


def run(splits: dict[str, Split], classes: int, device_name: str = "cpu") -> dict:
    """Measure both protocols on ``splits`` = ``{"train", "val", "test": (features, labels)}``;
    returns a dict of times (s), peaks (bytes) and accuracies (percent)."""
    device = torch.device(device_name)
    (train_x, train_y), (val_x, val_y), (query_x, query_y) = splits["train"], splits["val"], splits["test"]
    train_unit, query_unit = F.normalize(train_x, dim=1).to(device), F.normalize(query_x, dim=1).to(device)
    out: dict = {
        "bank": len(train_x),
        "queries": len(query_x),
        "dim": train_x.shape[1],
        "classes": classes,
        "device": str(device),
    }

    ours, out["knn_ours_s"] = _timed(lambda: knn_classify(train_unit, train_y, query_unit, classes))
    out["knn_ours_peak"] = peak_extra_memory(lambda: knn_classify(train_unit, train_y, query_unit, classes), device)
    bank_t = train_unit.T.contiguous()
    labels_dev = train_y.to(device)
    theirs, out["knn_lightly_s"] = _timed(lambda: knn_predict(query_unit, bank_t, labels_dev, classes, 200, 0.1))
    out["knn_lightly_peak"] = peak_extra_memory(
        lambda: knn_predict(query_unit, bank_t, labels_dev, classes, 200, 0.1), device
    )
    out["knn_top1"] = topk_accuracy(ours.cpu(), query_y, ks=(1,))["top1"]
    out["knn_same_top1"] = 100.0 * (ours[:, 0].cpu() == theirs[:, 0].cpu()).float().mean().item()

    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])  # the optimiser's one-time lazy imports (~2 s), not timed
    x, vx, qx = train_x.to(device), val_x.to(device), query_x.to(device)
    chosen, out["linear_search_s"] = _timed(
        lambda: select_linear_probe((x, train_y), (vx, val_y), classes, device=device)
    )
    weight_decay = chosen.weight_decay
    probe, out["linear_fit_s"] = _timed(lambda: fit_linear_probe(x, train_y.to(device), classes, weight_decay))
    out["linear_weight_decay"] = weight_decay
    out["linear_top1"] = topk_accuracy(probe_predictions(probe, qx, top=1).cpu(), query_y, ks=(1,))["top1"]
    mean, std = probe.mean.cpu(), probe.std.cpu()
    reference = LogisticRegression(C=1.0 / (weight_decay * len(train_x)), max_iter=1000)
    _, out["sklearn_fit_s"] = _timed(lambda: reference.fit(((train_x - mean) / std).numpy(), train_y.numpy()))
    predicted = torch.from_numpy(reference.predict(((query_x - mean) / std).numpy()))
    out["sklearn_top1"] = 100.0 * (predicted == query_y).float().mean().item()
    out["sklearn_weight_decay"], out["sklearn_search_s"] = _timed(
        lambda: sklearn_search(splits["train"], splits["val"], mean, std)
    )
    return out


def format_report(r: dict) -> str:
    mib = 2**20
    return "\n".join(
        [
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
            f"| linear | scikit-learn LogisticRegression, one fit, same objective | {r['sklearn_fit_s']:.2f} | | {r['sklearn_top1']:.2f} |",
            f"| linear | scikit-learn LogisticRegression, same search (chose wd {r['sklearn_weight_decay']:g}) | "
            f"{r['sklearn_search_s']:.2f} | | |",
            "",
            f"kNN: tcl-ssl / lightly time = {r['knn_ours_s'] / r['knn_lightly_s']:.2f}, "
            f"memory = {r['knn_ours_peak'] / max(r['knn_lightly_peak'], 1):.2f}",
            f"linear: scikit-learn / tcl-ssl time = {r['sklearn_fit_s'] / r['linear_fit_s']:.1f}x (one fit), "
            f"{r['sklearn_search_s'] / r['linear_search_s']:.1f}x (whole search); top-1 difference "
            f"{r['linear_top1'] - r['sklearn_top1']:+.2f} points",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcl-ssl bench eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--spread", type=float, default=8.0, help="noise per dimension around the class centres")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--features",
        default=None,
        metavar="FILE",
        help="real features from `tcl-ssl eval --save-features` instead of the mixture",
    )
    args = parser.parse_args(argv)
    if args.features:
        splits = read_features(args.features)
        classes = int(max(labels.max() for _, labels in splits.values())) + 1
    else:
        splits = synthetic_splits(args.bank, args.queries, args.dim, args.classes, args.spread)
        classes = args.classes
    print(format_report(run(splits, classes, args.device)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
