"""Evaluation protocols against independent oracles: lightly's kNN, scikit-learn, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.utils.benchmarking import knn_predict
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch.nn import functional as F

from tcl_ssl.backbones import build_backbone
from tcl_ssl.bench.eval import run, synthetic_splits
from tcl_ssl.bench.loss import peak_extra_memory
from tcl_ssl.cli import main
from tcl_ssl.data import assemble, load_builtin
from tcl_ssl.evaluation import fit_linear_probe, knn_classify, select_linear_probe, topk_accuracy
from tcl_ssl.evaluation.linear import WEIGHT_DECAYS, probe_predictions
from tcl_ssl.evaluation.linear_augmented import augmented_linear_probe
from tcl_ssl.evaluation.retrieval import retrieval_metrics


def _clusters(n: int, dim: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around random class centres: features ``(n, dim)`` and labels ``(n,)``."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, classes, (n,), generator=gen)
    return centres[labels] + spread * torch.randn(n, dim, generator=gen), labels


def test_knn_matches_lightly_knn_predict_in_bounded_chunks():
    bank, bank_labels = _clusters(700, 32, 10, 2.0, seed=0)
    queries, _ = _clusters(300, 32, 10, 2.0, seed=1)
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    theirs = knn_predict(queries, bank.T.contiguous(), bank_labels, 10, 50, 0.1)[:, :5]
    # a 40 kB budget makes chunks of 14 queries
    ours = knn_classify(bank, bank_labels, queries, 10, k=50, temperature=0.1, memory_bytes=40_000)
    assert torch.equal(ours, theirs)
    assert torch.equal(knn_classify(bank, bank_labels, queries, 10, k=50, temperature=0.1), ours)


def test_uniform_knn_matches_scikit_learn():
    bank, bank_labels = _clusters(500, 16, 6, 2.5, seed=2)
    queries, _ = _clusters(400, 16, 6, 2.5, seed=3)
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    for k in (1, 4, 25):  # even k: ties between classes, broken toward the lower index by both
        sklearn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(
            bank.numpy(), bank_labels.numpy()
        )
        ours = knn_classify(bank, bank_labels, queries, 6, k=k, weighting="uniform", top=1)[:, 0]
        np.testing.assert_array_equal(ours.numpy(), sklearn.predict(queries.numpy()))


def test_knn_rejects_bad_settings():
    bank = F.normalize(torch.randn(10, 4), dim=1)
    labels = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        knn_classify(bank, labels, bank, 2, k=0)
    with pytest.raises(ValueError, match="weighting must be one of similarity, uniform, got 'gauss'"):
        knn_classify(bank, labels, bank, 2, weighting="gauss")
    with pytest.raises(ValueError, match="share F"):
        knn_classify(bank, labels, bank[:, :3], 2)


def test_topk_accuracy_counts_hits_in_the_first_k_columns():
    predictions = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]])
    labels = torch.tensor([0, 0, 0, 2])
    assert topk_accuracy(predictions, labels, ks=(1, 2, 3)) == {"top1": 50.0, "top2": 75.0, "top3": 100.0}


def test_linear_probe_matches_scikit_learn_logistic_regression():
    x, y = _clusters(800, 24, 5, 3.5, seed=4)
    x_test, y_test = _clusters(800, 24, 5, 3.5, seed=5)
    x, x_test = 3.0 * x + 1.0, 3.0 * x_test + 1.0  # not standardised: the probe standardises
    weight_decay = 1e-2
    probe = fit_linear_probe(x, y, 5, weight_decay)  # scikit-learn's stopping rule and tolerance
    converged = fit_linear_probe(x, y, 5, weight_decay, tolerance_grad=1e-7)
    mean, std = x.mean(0), x.std(0)
    reference = LogisticRegression(C=1.0 / (weight_decay * len(x)), max_iter=5000, tol=1e-10)
    reference.fit(((x - mean) / std).numpy(), y.numpy())
    ours = probe_predictions(probe, x_test, top=1)[:, 0].numpy()
    theirs = reference.predict(((x_test - mean) / std).numpy())
    accuracy = (ours == y_test.numpy()).mean(), (theirs == y_test.numpy()).mean()
    assert 0.5 < accuracy[1] < 0.98  # a problem with errors, so that the comparison means something
    assert abs(accuracy[0] - accuracy[1]) <= 0.01
    # the same convex objective, so the same minimiser (logits up to a constant per row)
    logits_ours = converged(x_test).numpy()
    logits_theirs = reference.decision_function(((x_test - mean) / std).numpy())
    centred = lambda z: z - z.mean(axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(centred(logits_ours), centred(logits_theirs), atol=2e-3)


def test_weight_decay_is_chosen_on_validation():
    x, y = _clusters(300, 64, 4, 4.0, seed=6)
    val_x, val_y = _clusters(300, 64, 4, 4.0, seed=7)
    result = select_linear_probe((x, y), (val_x, val_y), 4, weight_decays=(1e-4, 1e-1, 10.0))
    assert set(result.val_top1) == {1e-4, 1e-1, 10.0}
    assert result.val_top1[result.weight_decay] == max(result.val_top1.values())
    chosen = topk_accuracy(probe_predictions(result.probe, val_x, top=1), val_y, ks=(1,))["top1"]
    assert chosen == result.val_top1[result.weight_decay]


def _retrieval_oracle(reference, reference_labels, queries, query_labels):
    """Precision@1, R-precision and MAP@R from their definitions (Musgrave et al. 2020), in numpy."""
    similarity = F.normalize(queries, dim=1) @ F.normalize(reference, dim=1).T
    order = np.argsort(-similarity.numpy(), axis=1, kind="stable")
    p1, rp, map_r = [], [], []
    for i, row in enumerate(order):
        relevant = reference_labels.numpy()[row] == query_labels[i].item()
        r = int((reference_labels == query_labels[i]).sum())
        p1.append(relevant[0])
        rp.append(relevant[:r].mean())
        hits = relevant[:r]
        precision_at = np.cumsum(hits) / np.arange(1, r + 1)
        map_r.append((precision_at * hits).sum() / r)
    return 100 * np.mean(p1), 100 * np.mean(rp), 100 * np.mean(map_r)


def test_retrieval_metrics_match_their_definitions():
    reference, reference_labels = _clusters(240, 16, 4, 1.5, seed=8)
    queries, query_labels = _clusters(60, 16, 4, 1.5, seed=9)
    ours = retrieval_metrics(reference, reference_labels, queries, query_labels, device="cpu", batch_size=16)
    expected = _retrieval_oracle(reference, reference_labels, queries, query_labels)
    assert 30 < expected[2] < 95  # neither trivial nor hopeless
    np.testing.assert_allclose(
        [ours["precision_at_1"], ours["r_precision"], ours["mean_average_precision_at_r"]], expected, atol=1e-4
    )


def test_augmented_linear_probe_learns_and_leaves_the_backbone_frozen():
    digits = load_builtin()
    data = assemble(
        digits.name,
        digits.train.subset(torch.arange(0, 3600, 6)),
        digits.val.subset(torch.arange(0, 400, 4)),
        digits.test.subset(torch.arange(0, 1000, 5)),
    )
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18", 1, "imagenet")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = augmented_linear_probe(
        backbone, dim, data, {"val": data.val, "test": data.test}, epochs=10, batch_size=64, accelerator="cpu"
    )
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included: eval mode
    assert all(p.requires_grad for p in backbone.parameters())  # restored
    # a random ResNet's features separate digits: far above the 10 % of chance after 10 epochs
    assert result["test"]["top1"] > 40.0 and result["test"]["top5"] >= result["test"]["top1"]


def test_knn_memory_stays_within_its_budget_whatever_the_bank():
    bank = F.normalize(torch.randn(20_000, 16), dim=1)
    labels = torch.randint(0, 10, (20_000,))
    queries = F.normalize(torch.randn(2_000, 16), dim=1)
    budget = 2**20  # 1 MiB: chunks of 13 queries, where all at once would take 160 MB
    peak = peak_extra_memory(
        lambda: knn_classify(bank, labels, queries, 10, k=50, memory_bytes=budget), torch.device("cpu")
    )
    assert peak < 2 * budget, peak
    whole = knn_classify(bank, labels, queries, 10, k=50)
    assert torch.equal(knn_classify(bank, labels, queries, 10, k=50, memory_bytes=budget), whole)


def test_bench_eval_compares_like_with_like(capsys):
    """`tcl-ssl bench eval` on a small mixture: the same kNN predictions as lightly's, the probe
    within a point of scikit-learn's on the queries, and both searches picking a grid value."""
    report = run(synthetic_splits(bank=3_000, queries=600, dim=32, classes=5, spread=3.0), classes=5)
    assert report["knn_same_top1"] == 100.0
    assert 50.0 < report["sklearn_top1"] < 99.0  # errors to disagree on
    assert abs(report["linear_top1"] - report["sklearn_top1"]) <= 1.0
    assert report["linear_weight_decay"] in WEIGHT_DECAYS and report["sklearn_weight_decay"] in WEIGHT_DECAYS
    assert main(["bench", "eval", "--bank", "500", "--queries", "100", "--dim", "8", "--classes", "3"]) == 0
    assert "scikit-learn / tcl-ssl time" in capsys.readouterr().out


def test_linear_probe_refuses_bad_settings():
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        fit_linear_probe(x, y, 2, -1.0)
    with pytest.raises(ValueError, match="tolerance_grad must be > 0, got 0"):
        fit_linear_probe(x, y, 2, 1e-3, tolerance_grad=0.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        fit_linear_probe(x, y[:5], 2, 1e-3)
