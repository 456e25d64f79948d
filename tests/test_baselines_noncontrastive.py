"""VICReg, Barlow Twins, DINO and SwAV: each loss against an oracle written out here in float64,
DINO's centre (update rule, eval mode, checkpoint), SwAV's Sinkhorn codes, queue and frozen
prototypes. The shared method tests (tests/test_methods.py) cover them too."""

from __future__ import annotations

import pytest
import torch
from lightly.loss.swav_loss import sinkhorn
from lightly.models.utils import update_momentum
from torch import Tensor, nn

from baselines.dino import DINO
from tcl_ssl.methods import Method, OptimConfig, method_class

BATCH = 16

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_backbone() -> tuple[nn.Module, int]:
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return backbone, 8


def build(name: str, seed: int = 0, **options) -> Method:
    torch.manual_seed(seed)
    backbone, dim = tiny_backbone()
    return method_class(name)(backbone, dim, nn.Identity(), optim=OptimConfig(lr=0.1), **options)


def views(local: int = 0, seed: int = 0) -> list[Tensor]:
    """Two 16 px global views and ``local`` 8 px local views of a batch of random images."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, 1, 16, 16, generator=generator) for _ in range(2)] + [
        torch.randn(BATCH, 1, 8, 8, generator=generator) for _ in range(local)
    ]


def projections(method: Method, batch: list[Tensor], head: nn.Module, backbone: nn.Module | None = None) -> Tensor:
    """``(V, B, D)`` float64 head outputs of the views (BatchNorm in training mode, as in the loss)."""
    with torch.no_grad():
        return torch.stack(method.project_views(batch, head, backbone)).double()


# --- VICReg -------------------------------------------------------------------------------------


def vicreg_oracle(za: Tensor, zb: Tensor, lam: float, mu: float, nu: float) -> Tensor:
    """The paper's loss (eqs. 1-6) with the official code's normalisations: invariance = mean squared
    difference over batch and dimensions; variance = hinge of the std (eps 1e-4), halved over both
    views; covariance = squared off-diagonal entries / d, summed over both views."""
    n, d = za.shape
    invariance = ((za - zb) ** 2).sum() / (n * d)

    def variance(z: Tensor) -> Tensor:
        return torch.clamp(1 - torch.sqrt(z.var(dim=0, unbiased=True) + 1e-4), min=0).mean()

    def covariance(z: Tensor) -> Tensor:
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        return (cov**2).sum().sub((cov.diagonal() ** 2).sum()) / d

    return lam * invariance + mu * (variance(za) + variance(zb)) / 2 + nu * (covariance(za) + covariance(zb))


def test_vicreg_loss_is_the_three_terms_with_their_weights():
    method = build("vicreg", hidden_dim=32, output_dim=12, lambda_param=10.0, mu_param=20.0, nu_param=3.0)
    batch = views()
    loss = method.training_loss(batch, None)
    za, zb = projections(method, batch, method.projection_head)
    torch.testing.assert_close(loss.double(), vicreg_oracle(za, zb, 10.0, 20.0, 3.0), rtol=1e-5, atol=1e-6)
    # and the default weights are the published 25 / 25 / 1
    default = build("vicreg", hidden_dim=32, output_dim=12)
    expected = vicreg_oracle(*projections(default, batch, default.projection_head), 25.0, 25.0, 1.0)
    torch.testing.assert_close(default.training_loss(batch, None).double(), expected, rtol=1e-5, atol=1e-6)


# --- Barlow Twins -------------------------------------------------------------------------------


def barlow_oracle(za: Tensor, zb: Tensor, lam: float, scale: float) -> Tensor:
    """Standardise each dimension over the batch (biased std, eps 1e-5 as BatchNorm), C = za^T zb / n,
    scale * (sum_i (1 - C_ii)^2 + lam * sum_{i != j} C_ij^2)."""
    n = za.shape[0]

    def standardise(z: Tensor) -> Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + 1e-5)

    c = standardise(za).T @ standardise(zb) / n
    on_diagonal = ((1 - c.diagonal()) ** 2).sum()
    off_diagonal = (c**2).sum() - (c.diagonal() ** 2).sum()
    return scale * (on_diagonal + lam * off_diagonal)


def test_barlow_twins_loss_is_the_scaled_cross_correlation_loss():
    method = build("barlowtwins", hidden_dim=32, output_dim=12, lambda_param=0.02, scale_loss=0.5)
    batch = views()
    loss = method.training_loss(batch, None)
    za, zb = projections(method, batch, method.projection_head)
    torch.testing.assert_close(loss.double(), barlow_oracle(za, zb, 0.02, 0.5), rtol=1e-5, atol=1e-6)


# --- DINO ---------------------------------------------------------------------------------------


def dino_oracle(teacher: Tensor, student: Tensor, center: Tensor, teacher_temp: float, student_temp: float) -> Tensor:
    """Mean over pairs (teacher view t, student view s != t) and images of the cross-entropy
    -sum_k softmax((t - center) / teacher_temp)_k log softmax(s / student_temp)_k."""
    total, pairs = teacher.new_zeros(()), 0
    for t, teacher_view in enumerate(teacher):
        p = torch.softmax((teacher_view - center) / teacher_temp, dim=1)
        for s, student_view in enumerate(student):
            if s != t:
                total = total - (p * torch.log_softmax(student_view / student_temp, dim=1)).sum(dim=1).mean()
                pairs += 1
    return total / pairs


def dino(**options) -> DINO:
    method = build("dino", hidden_dim=32, bottleneck_dim=8, output_dim=20, **options)
    assert isinstance(method, DINO)
    return method


def teacher_and_student(method: DINO, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
    student = projections(method, batch, method.projection_head)
    teacher = projections(method, batch[:2], method.projection_head_momentum, method.backbone_momentum)
    return teacher, student


@pytest.mark.parametrize("local", [0, 2])
def test_dino_loss_is_the_centred_sharpened_cross_entropy_and_moves_the_centre(local):
    method = dino(student_temp=0.2, teacher_temp=0.05, center_momentum=0.8)
    with torch.no_grad():  # a teacher unlike the student, and a centre away from zero
        for param in method.projection_head_momentum.parameters():
            param.add_(0.05 * torch.randn_like(param))
        method.criterion.center.copy_(0.3 * torch.randn_like(method.criterion.center))
    center = method.criterion.center.clone().double().reshape(-1)
    batch = views(local)
    teacher, student = teacher_and_student(method, batch)
    loss = method.training_loss(batch, None)
    torch.testing.assert_close(loss.double(), dino_oracle(teacher, student, center, 0.05, 0.2), rtol=1e-5, atol=1e-6)
    # the centre's update: m * c + (1 - m) * mean of the teacher's outputs over views and images
    expected = 0.8 * center + 0.2 * teacher.mean(dim=(0, 1))
    torch.testing.assert_close(method.criterion.center.reshape(-1).double(), expected, rtol=1e-5, atol=1e-6)


def test_dino_evaluated_in_eval_mode_leaves_the_centre(monkeypatch):
    method = dino()
    batch = views()
    method.criterion.eval()
    first = method.training_loss(batch, None)
    assert not method.criterion.center.any()
    assert torch.equal(method.training_loss(batch, None), first)
    method.criterion.train()
    method.training_loss(batch, None)
    assert method.criterion.center.any()


def test_dino_teacher_temperature_warms_up_linearly_by_epoch(monkeypatch):
    method = dino(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    batch = views()
    teacher, student = teacher_and_student(method, batch)
    zero = torch.zeros(teacher.shape[-1], dtype=torch.float64)
    for epoch, temperature in ((0, 0.04), (1, 0.055), (2, 0.07), (5, 0.07)):
        monkeypatch.setattr(DINO, "current_epoch", property(lambda self, e=epoch: e))
        method.criterion.eval()  # the same centre (zero) every time
        loss = method.training_loss(batch, None)
        torch.testing.assert_close(
            loss.double(), dino_oracle(teacher, student, zero, temperature, 0.1), rtol=1e-5, atol=1e-6
        )


def test_dino_centre_and_teacher_survive_a_checkpoint(tmp_path):
    method = dino(momentum_start=0.5)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for seed in (0, 1):
        optimizer.zero_grad()
        method.training_loss(views(seed=seed), None).backward()
        optimizer.step()
        for online, target in method.momentum_pairs():
            update_momentum(online, target, 0.5)
    assert method.criterion.center.any()
    torch.save(method.state_dict(), tmp_path / "dino.pt")
    restored = dino(seed=1)
    assert not torch.equal(restored.criterion.center, method.criterion.center)
    restored.load_state_dict(torch.load(tmp_path / "dino.pt"))
    for (key, value), expected in zip(restored.state_dict().items(), method.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)
    assert "criterion.center" in method.state_dict()
    batch = views(seed=2)
    torch.testing.assert_close(restored.training_loss(batch, None), method.training_loss(batch, None), rtol=0, atol=0)


def test_dino_last_layer_is_frozen_for_its_first_epochs(monkeypatch):
    method = dino(freeze_last_layer=1)
    for epoch, frozen in ((0, True), (1, False)):
        monkeypatch.setattr(DINO, "current_epoch", property(lambda self, e=epoch: e))
        method.zero_grad()
        method.training_loss(views(), None).backward()
        method.on_after_backward()
        assert (method.projection_head.last_layer.weight_v.grad is None) == frozen
        assert method.projection_head.layers[0].weight.grad is not None


# --- SwAV ---------------------------------------------------------------------------------------


def sinkhorn_oracle(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """Codes ``(B, K)``: Q = exp(scores / epsilon)^T normalised to sum 1, then alternately rows
    (prototypes) to sum 1/K and columns (images) to sum 1/B; returned with each image's code summing to 1."""
    q = torch.exp(scores / epsilon).T
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def swav_oracle(scores: Tensor, n_global: int, temperature: float, codes: list[Tensor]) -> Tensor:
    """For each global view i: mean over the other views v of the cross-entropy between i's codes and
    softmax(scores_v / temperature); averaged over the global views."""
    total = scores.new_zeros(())
    for i in range(n_global):
        others = [v for v in range(len(scores)) if v != i]
        terms = [-(codes[i] * torch.log_softmax(scores[v] / temperature, dim=1)).sum(dim=1).mean() for v in others]
        total = total + sum(terms) / len(others)
    return total / n_global


def swav_scores(method: Method, batch: list[Tensor], extra: Tensor | None = None) -> Tensor:
    """``(V, B, K)`` float64 scores of the views' normalised projections against the unit prototypes."""
    z = nn.functional.normalize(projections(method, batch, method.projection_head), dim=-1)
    prototypes = nn.functional.normalize(method.prototypes.heads[0].weight.double(), dim=1)
    return z @ prototypes.T


def test_sinkhorn_codes_have_near_uniform_marginals():
    """lightly's Sinkhorn is the oracle's; it spreads the images over the prototypes: each image's
    code sums to 1 and each prototype's share approaches 1/K as the iterations go on (SwAV's 3
    already halve the imbalance of a plain softmax)."""
    generator = torch.Generator().manual_seed(0)
    z = nn.functional.normalize(torch.randn(64, 8, generator=generator, dtype=torch.float64), dim=1)
    prototypes = nn.functional.normalize(torch.randn(16, 8, generator=generator, dtype=torch.float64), dim=1)
    scores = z @ prototypes.T

    def imbalance(codes: Tensor) -> float:  # the largest relative gap of a prototype's share from 1/16
        return float((codes.sum(dim=0) / 64 * 16 - 1).abs().max())

    plain = imbalance(torch.softmax(scores / 0.05, dim=1))
    for iterations, most in ((3, 0.6 * plain), (30, 1e-3)):
        codes = sinkhorn(scores, iterations=iterations, epsilon=0.05)
        torch.testing.assert_close(codes, sinkhorn_oracle(scores, 0.05, iterations))
        torch.testing.assert_close(codes.sum(dim=1), torch.ones(64, dtype=torch.float64))
        assert imbalance(codes) < most, (iterations, imbalance(codes), plain)


@pytest.mark.parametrize("local", [0, 2])
def test_swav_loss_is_the_swapped_prediction_of_sinkhorn_codes(local):
    method = build("swav", hidden_dim=32, output_dim=8, num_prototypes=12, temperature=0.2, queue_size=0)
    batch = views(local)
    loss = method.training_loss(batch, None)  # normalises the prototypes first
    scores = swav_scores(method, batch)
    codes = [sinkhorn_oracle(scores[i], 0.05, 3) for i in range(2)]
    torch.testing.assert_close(loss.double(), swav_oracle(scores, 2, 0.2, codes), rtol=1e-5, atol=1e-6)
    norms = method.prototypes.heads[0].weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_swav_queue_joins_the_sinkhorn_step_from_its_epoch_and_fills_while_training(monkeypatch):
    method = build("swav", hidden_dim=32, output_dim=8, num_prototypes=12, queue_size=48, queue_start_epoch=1)
    first, second = views(seed=0), views(seed=1)
    method.training_loss(first, None)  # epoch 0: fills the queues, does not use them
    z_first = nn.functional.normalize(projections(method, first, method.projection_head), dim=-1)
    for queue, z in zip(method.queues, z_first):
        assert int(queue.bank_ptr) == BATCH
        torch.testing.assert_close(queue.bank[:BATCH].double(), z, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(type(method), "current_epoch", property(lambda self: 1))
    banks = [queue.bank.clone().double() for queue in method.queues]
    loss = method.training_loss(second, None)
    scores = swav_scores(method, second)
    prototypes = nn.functional.normalize(method.prototypes.heads[0].weight.double(), dim=1)
    codes = [sinkhorn_oracle(torch.cat([scores[i], banks[i] @ prototypes.T]), 0.05, 3)[:BATCH] for i in range(2)]
    torch.testing.assert_close(loss.double(), swav_oracle(scores, 2, 0.1, codes), rtol=1e-5, atol=1e-6)
    assert all(int(queue.bank_ptr) == 2 * BATCH for queue in method.queues)
    method.criterion.eval()  # evaluating leaves the queues as they are
    method.training_loss(first, None)
    assert all(int(queue.bank_ptr) == 2 * BATCH for queue in method.queues)
    assert {"queues.0.bank", "queues.1.bank", "queues.0.bank_ptr"} <= set(method.state_dict())


def test_swav_prototypes_are_frozen_for_their_first_epochs(monkeypatch):
    method = build("swav", hidden_dim=32, output_dim=8, num_prototypes=12, freeze_prototypes_epochs=2)
    for epoch, frozen in ((0, True), (1, True), (2, False)):
        monkeypatch.setattr(type(method), "current_epoch", property(lambda self, e=epoch: e))
        method.zero_grad()
        method.training_loss(views(), None).backward()
        method.on_after_backward()
        assert (method.prototypes.heads[0].weight.grad is None) == frozen
        assert method.projection_head.layers[0].weight.grad is not None


@pytest.mark.parametrize(
    "name,options",
    [
        ("vicreg", {"hidden_dim": 32, "output_dim": 12}),
        ("barlowtwins", {"hidden_dim": 32, "output_dim": 12}),
        ("dino", {"hidden_dim": 32, "bottleneck_dim": 8, "output_dim": 20}),
        ("swav", {"hidden_dim": 32, "output_dim": 8, "num_prototypes": 12, "queue_size": 48, "queue_start_epoch": 0}),
    ],
)
def test_checkpoint_round_trip_restores_every_weight_and_state_and_the_next_loss(tmp_path, name, options):
    method = build(name, **options)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for seed in (0, 1):  # trained weights, a moved centre, a filled queue
        optimizer.zero_grad()
        method.training_loss(views(local=2 if method.multi_crop else 0, seed=seed), None).backward()
        optimizer.step()
    torch.save(method.state_dict(), tmp_path / "state.pt")
    restored = build(name, seed=1, **options)
    restored.load_state_dict(torch.load(tmp_path / "state.pt"))
    for (key, value), expected in zip(restored.state_dict().items(), method.state_dict().values(), strict=True):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)
    batch = views(seed=2)
    torch.testing.assert_close(restored.training_loss(batch, None), method.training_loss(batch, None), rtol=0, atol=0)


def test_swav_refuses_more_full_size_views_than_queues():
    method = build("swav", hidden_dim=32, output_dim=8, num_prototypes=12, queue_size=48)
    with pytest.raises(ValueError, match=r"swav keeps one queue per full-size view \(2\), got 3"):
        method.training_loss(views() + views()[:1], None)


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("vicreg", {"lambda_param": 0}, "lambda_param must be a finite number > 0, got 0"),
        ("barlowtwins", {"lambda_param": -1.0}, "lambda_param must be a finite number > 0, got -1.0"),
        ("dino", {"center_momentum": 1.5}, r"center_momentum must be a number in \[0, 1\], got 1.5"),
        ("dino", {"warmup_teacher_temp_epochs": -1}, "warmup_teacher_temp_epochs must be an integer >= 0, got -1"),
        ("swav", {"num_prototypes": 0}, "num_prototypes must be an integer >= 1, got 0"),
        ("swav", {"queue_size": 2.5}, "queue_size must be an integer >= 0, got 2.5"),
    ],
)
def test_bad_options_are_refused_by_name(name, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, **options)
