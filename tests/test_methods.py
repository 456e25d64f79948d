"""Every method (TCL and the baselines): settings, training mechanics, momentum targets, queues,
checkpoints, and loss identities against independent implementations.

The method lists come from the registry, so a newly registered method is covered by every
per-method test without editing this file.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn

from tcl_ssl import TCLLoss, tcl_loss
from tcl_ssl.data import Split, batch_loader, load_builtin
from tcl_ssl.methods import Method, OptimConfig, available_methods, method_class
from tcl_ssl.methods.momentum import MomentumMethod
from tcl_ssl.methods.optim import build_optimizer
from tcl_ssl.methods.registry import METHODS

BATCH = 16
SELF_SUPERVISED = [name for name in available_methods() if method_class(name).without_labels]
SUPERVISED = [name for name in available_methods() if method_class(name).with_labels]
#: methods with momentum (EMA) target networks
MOMENTUM = [name for name in available_methods() if issubclass(method_class(name), MomentumMethod)]
#: methods that cannot train in a setting: (name, supervised) of every such pair
WRONG_SETTINGS = [
    (name, supervised)
    for name in available_methods()
    for supervised, trains in ((False, method_class(name).without_labels), (True, method_class(name).with_labels))
    if not trains
]
#: small heads and queues so that the tests run in seconds, for the methods whose options have them
SMALL_OPTIONS = {"hidden_dim": 32, "output_dim": 16, "queue_size": 48}


def small_options(name: str) -> dict[str, Any]:
    """The :data:`SMALL_OPTIONS` that the method ``name`` takes."""
    options = method_class(name).options()
    return {key: value for key, value in SMALL_OPTIONS.items() if key in options}


def _view_cases() -> list[tuple[str, bool, int, str]]:
    """``(name, supervised, num_views, message)``: a view count outside each method's range, in a
    setting it trains in, and the message that refuses it."""
    cases = []
    for name in available_methods():
        cls = method_class(name)
        low, high = cls.views
        allowed = f"exactly {low}" if low == high else f"{low} or more" if high is None else f"{low} to {high}"
        supervised = not cls.without_labels
        if low > 1:
            cases.append((name, supervised, low - 1, f"takes {allowed} views per image"))
        if high is not None:
            cases.append((name, supervised, high + 1, f"takes {allowed} views per image"))
    return cases


pytestmark = pytest.mark.usefixtures("one_thread")


class TwoFixedViews(nn.Module):
    """A deterministic 'augmentation': the image and its mirror image, normalised."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float().div(255).sub(0.13).div(0.3)
        return [x, x.flip(-1)]


def tiny_backbone() -> tuple[nn.Module, int]:
    backbone = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1),
        nn.BatchNorm2d(24),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return backbone, 24


def build(name: str, supervised: bool = False, seed: int = 0, **options) -> Method:
    torch.manual_seed(seed)
    backbone, dim = tiny_backbone()
    optim = OptimConfig(lr=0.1, weight_decay=1e-4, warmup_epochs=0, batch_size=BATCH)
    return method_class(name)(
        backbone,
        dim,
        TwoFixedViews(),
        supervised=supervised,
        num_classes=10,
        optim=optim,
        **(small_options(name) | options),
    )


@pytest.fixture(scope="module")
def shuffled_digits() -> Split:
    data = load_builtin()  # sorted by class: shuffle, so that every batch has all classes
    keep = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: 14 * BATCH]
    return Split(data.train.images[keep], data.train.labels[keep])


@pytest.fixture(scope="module")
def digits(shuffled_digits) -> Split:
    """4 batches of digits."""
    return Split(shuffled_digits.images[: 4 * BATCH], shuffled_digits.labels[: 4 * BATCH])


@pytest.fixture(scope="module")
def stream(shuffled_digits) -> Split:
    """10 other batches of digits, to train on."""
    return Split(shuffled_digits.images[4 * BATCH :], shuffled_digits.labels[4 * BATCH :])


def _views_and_labels(digits: Split, start: int = 0):
    images = digits.images[start : start + BATCH]
    return TwoFixedViews()(images), digits.labels[start : start + BATCH]


def _fill_queue_with_current_keys(method: Method, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Put the key encoder's current keys of ``images`` (both views) in the method's queue, so that
    a loss measured before and after training meets the negatives it would meet in training."""
    bank = method.criterion.memory_bank
    with torch.no_grad():
        keys = torch.cat(
            method.project_views(TwoFixedViews()(images), method.projection_head_momentum, method.backbone_momentum)
        )
    if hasattr(bank, "bank_ptr"):  # lightly's queue (MoCo)
        bank.bank.copy_(nn.functional.normalize(keys, dim=1)[: bank.bank.shape[0]])
    else:  # TCLLoss's labelled bank (moco-tcl)
        bank.filled.zero_()
        bank.position.zero_()
        bank.enqueue(nn.functional.normalize(keys, dim=1), None if labels is None else labels.repeat(2))


def _eval_loss(method: Method, views, labels, queue_images=None) -> float:
    """The training loss on fixed views, without changing any queue (filled with current keys of
    ``queue_images`` first, where the method has one)."""
    criterion = getattr(method, "criterion", None)
    has_queue = isinstance(method, MomentumMethod) and hasattr(criterion, "memory_bank")
    if queue_images is not None and has_queue:
        _fill_queue_with_current_keys(method, *queue_images)
    if criterion is not None:
        criterion.eval()
    with torch.no_grad():
        loss = float(method.training_loss(views, labels))
    if criterion is not None:
        criterion.train()
    return loss


def test_registry_lists_every_method_and_rejects_others():
    names = available_methods()
    assert names == list(METHODS) and len(set(names)) == len(names) and names[0] == "tcl"
    assert set(SELF_SUPERVISED) | set(SUPERVISED) == set(names)  # every method trains in some setting
    for name in names:
        cls = method_class(name)
        assert issubclass(cls, Method) and cls is not Method and cls.name == name
        assert METHODS[name] == f"{cls.__module__}:{cls.__qualname__}"
        cls.check_setting(not cls.without_labels, cls.defaults.num_views)  # its own defaults are accepted
    assert "simsiam" not in names
    with pytest.raises(ValueError, match=re.escape(f"unknown method 'simsiam'; available: {', '.join(names)}")):
        method_class("simsiam")


@pytest.mark.parametrize("name", available_methods())
def test_search_space_names_the_methods_options_with_its_default_among_the_values(name):
    cls = method_class(name)
    supervised = not cls.without_labels
    options = cls.resolved_options(supervised)
    for option, values in cls.search_space.items():
        assert option in options, option
        assert len(values) >= 2 and len(set(values)) == len(values), (option, values)
        assert options[option] in values, (option, options[option], values)


@pytest.mark.parametrize(
    "name,supervised",
    [(n, False) for n in SELF_SUPERVISED] + [(n, True) for n in SUPERVISED],
)
def test_training_lowers_the_loss_with_finite_gradients(digits, stream, name, supervised):
    """60 SGD steps on a stream of other images lower the mean loss on three held-out batches
    (queues holding the current keys of other held-out images, before and after)."""
    method = build(name, supervised)
    held_out = [_views_and_labels(digits, start) for start in (0, 2 * BATCH, 3 * BATCH)]
    queue = (digits.images[BATCH : 2 * BATCH + BATCH // 2], digits.labels[BATCH : 2 * BATCH + BATCH // 2])

    def held_out_loss() -> float:
        return sum(
            _eval_loss(method, views, labels if supervised else None, (queue[0], queue[1] if supervised else None))
            for views, labels in held_out
        ) / len(held_out)

    before = held_out_loss()
    optimizer = build_optimizer(method, OptimConfig(lr=0.02, weight_decay=0.0, warmup_epochs=0, batch_size=256))
    for step in range(60):
        train_views, train_labels = _views_and_labels(stream, BATCH * (step % (len(stream) // BATCH)))
        optimizer.zero_grad()
        loss = method.training_loss(train_views, train_labels if supervised else None)
        assert torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in method.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        optimizer.step()
        if isinstance(method, MomentumMethod):
            for online, target in method.momentum_pairs():
                update_momentum(online, target, 0.9)
    after = held_out_loss()
    # an untrained or broken method stays put or rises; every method here fell by 3 % (SupCon) to 85 %
    assert after < before - 0.02 * abs(before), (before, after)


@pytest.mark.parametrize("name", MOMENTUM)
def test_targets_get_no_gradient_and_move_toward_the_online_networks(digits, name):
    method = build(name)
    views, _ = _views_and_labels(digits)
    optimizer = build_optimizer(method, OptimConfig(lr=0.5, weight_decay=0.0, warmup_epochs=0, batch_size=256))
    for start in (0, BATCH):
        optimizer.zero_grad()
        method.training_loss(_views_and_labels(digits, start)[0], None).backward()
        optimizer.step()
    for online, target in method.momentum_pairs():
        target_params = list(target.parameters())
        assert all(not p.requires_grad and p.grad is None for p in target_params)
        optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert not optimised & {id(p) for p in target_params}

        def distance():
            return sum(float((a - b).detach().norm()) for a, b in zip(online.parameters(), target.parameters()))

        before = [p.clone() for p in target_params]
        gap = distance()
        assert gap > 0  # the online network has moved away from its copy
        update_momentum(online, target, 0.75)
        assert distance() == pytest.approx(0.75 * gap, rel=1e-4)  # EMA: the gap shrinks by m
        assert any(not torch.equal(a, b) for a, b in zip(before, target.parameters()))


class _SnapshotTargets(Callback):
    """Online and target parameters at the start of every batch (before the module's EMA hook)."""

    def __init__(self):
        self.before, self.after = [], []

    def _params(self, pl_module):
        return [
            ([p.detach().clone() for p in online.parameters()], [p.detach().clone() for p in target.parameters()])
            for online, target in pl_module.momentum_pairs()
        ]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(self._params(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(self._params(pl_module))


def _perturb_online(method) -> None:
    """Make the online networks differ from their target copies."""
    with torch.no_grad():
        for online, _ in method.momentum_pairs():
            for param in online.parameters():
                param.add_(torch.randn_like(param) * 0.1)


def _fit_steps(method, digits, **trainer_options):
    snapshots = _SnapshotTargets()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        callbacks=[snapshots],
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_options,
    )
    trainer.fit(method, train_dataloaders=batch_loader(digits, BATCH, shuffle=False, drop_last=True))
    return snapshots


@pytest.mark.parametrize("name", MOMENTUM)
def test_the_training_hook_moves_targets_by_the_scheduled_momentum(digits, name):
    method = build(name, momentum_start=0.5, momentum_end=0.9)
    _perturb_online(method)
    snapshots = _fit_steps(method, digits, max_steps=2)
    for step, momentum in enumerate((0.5, 0.9)):  # cosine_schedule over 2 steps: start, then end
        for (online, target_before), (_, target_after) in zip(snapshots.before[step], snapshots.after[step]):
            assert any(not torch.equal(o, t) for o, t in zip(online, target_before))  # they differ
            for o, t0, t in zip(online, target_before, target_after):
                torch.testing.assert_close(t, momentum * t0 + (1 - momentum) * o)


def test_the_momentum_update_runs_once_per_optimiser_step(digits):
    method = build("byol", momentum_start=0.5, momentum_end=0.5)
    _perturb_online(method)
    snapshots = _fit_steps(method, digits, max_steps=1, accumulate_grad_batches=2)
    assert len(snapshots.before) == 2  # two micro-batches, one optimiser step, one update
    for (online, target_before), (_, target_after) in zip(snapshots.before[0], snapshots.after[1]):
        for o, t0, t in zip(online, target_before, target_after):
            torch.testing.assert_close(t, 0.5 * t0 + 0.5 * o)


def test_moco_queue_fills_with_the_keys_and_wraps(digits):
    method = build("moco")  # queue of 48, 2 x 16 keys per step
    bank = method.criterion.memory_bank
    pointers = []
    for start in (0, BATCH, 2 * BATCH):
        views, _ = _views_and_labels(digits, start)
        method.training_loss(views, None).backward()
        pointers.append(int(bank.bank_ptr))
    assert pointers == [32, 0, 32]  # 32; 64 -> wraps (lightly truncates at the end); 32
    with torch.no_grad():
        k0, k1 = method.project_views(views, method.projection_head_momentum, method.backbone_momentum)
    # the last step enqueued k1 then k0, once, at 0..31
    torch.testing.assert_close(bank.bank[:BATCH], nn.functional.normalize(k1, dim=1), atol=1e-6, rtol=0)
    torch.testing.assert_close(bank.bank[BATCH : 2 * BATCH], nn.functional.normalize(k0, dim=1), atol=1e-6, rtol=0)


def test_moco_loss_is_the_mean_of_both_directions_against_the_queue_before_the_step(digits):
    method = build("moco", temperature=0.3)
    method.training_loss(_views_and_labels(digits, 0)[0], None)  # puts real keys in the queue
    queue = method.criterion.memory_bank.bank.clone()
    views, _ = _views_and_labels(digits, BATCH)
    loss = method.training_loss(views, None)
    with torch.no_grad():
        q0, q1 = method.project_views(views, method.projection_head)
        k0, k1 = method.project_views(views, method.projection_head_momentum, method.backbone_momentum)

    def against_queue(queries, keys):  # lightly's NT-Xent with a frozen copy of the queue
        reference = NTXentLoss(temperature=0.3, memory_bank_size=tuple(queue.shape)).eval()
        reference.memory_bank.bank.copy_(queue)
        return reference(queries, keys)

    torch.testing.assert_close(loss, 0.5 * (against_queue(q0, k1) + against_queue(q1, k0)))


@pytest.mark.parametrize("supervised", [False, True])
def test_moco_tcl_queue_keeps_labels_and_wraps(digits, supervised):
    method = build("moco-tcl", supervised)
    bank = method.criterion.memory_bank
    for start in (0, BATCH, 2 * BATCH):
        views, labels = _views_and_labels(digits, start)
        method.training_loss(views, labels if supervised else None).backward()
    assert int(bank.filled) == 48 and int(bank.position) == (6 * BATCH) % 48
    with torch.no_grad():
        k0, k1 = method.project_views(views, method.projection_head_momentum, method.backbone_momentum)
    keys = nn.functional.normalize(torch.cat([k1, k0]), dim=1)
    torch.testing.assert_close(bank.get()[0][16:48], keys, atol=1e-6, rtol=0)  # the keys, not the queries
    stored = bank.get()[1]
    if supervised:  # the last step put k1 at 16..31 and k0 at 32..47, each with the batch's labels
        assert stored[16:32].tolist() == labels.tolist() and stored[32:48].tolist() == labels.tolist()
    else:
        assert bool((stored == -1).all())


@pytest.mark.parametrize("supervised", [False, True])
def test_moco_tcl_is_the_tcl_core_on_queries_against_keys_and_queue(digits, supervised):
    method = build("moco-tcl", supervised, k1=0.0, k2=1.5, temperature=0.3)
    first, first_labels = _views_and_labels(digits, 0)
    method.training_loss(first, first_labels if supervised else None)  # puts 32 keys in the queue
    bank, bank_labels = (t.clone() for t in method.criterion.memory_bank.get())
    views, labels = _views_and_labels(digits, BATCH)
    loss = method.training_loss(views, labels if supervised else None)

    with torch.no_grad():
        q0, q1 = method.project_views(views, method.projection_head)
        k0, k1 = method.project_views(views, method.projection_head_momentum, method.backbone_momentum)
    groups = labels if supervised else torch.arange(BATCH)
    queue_groups = bank_labels if supervised else torch.full((bank.shape[0],), -1)
    # Both terms see the queue as it was before the step.
    terms = [
        tcl_loss(q, groups, 0.3, 0.0, 1.5, keys=torch.cat([k, bank]), key_groups=torch.cat([groups, queue_groups]))
        for q, k in ((q0, k1), (q1, k0))
    ]
    torch.testing.assert_close(loss, 0.5 * (terms[0] + terms[1]))


def test_simclr_loss_is_tcl_with_k1_zero(digits):
    method = build("simclr", temperature=0.3)
    views, _ = _views_and_labels(digits)
    loss = method.training_loss(views, None)
    z0, z1 = method.project_views(views, method.projection_head)
    torch.testing.assert_close(loss, TCLLoss(temperature=0.3, k1=0.0, k2=1.0)(z0, z1))


def test_tcl_method_at_k1_zero_is_simclr_from_the_same_seed(digits):
    """Same seed, same head width: the same weights, loss and gradients, so any gap between
    the two methods' runs under one optimiser is run-to-run spread, not the loss."""
    tcl = build("tcl", temperature=0.3, k1=0.0, k2=1.0)
    simclr = build("simclr", temperature=0.3)
    theirs = simclr.state_dict()
    assert tcl.state_dict().keys() == theirs.keys()
    for name, value in tcl.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=0, msg=name)
    views, _ = _views_and_labels(digits)
    ours, reference = tcl.training_loss(views, None), simclr.training_loss(views, None)
    torch.testing.assert_close(ours, reference)
    ours.backward()
    reference.backward()
    simclr_params = dict(simclr.named_parameters())
    for name, param in tcl.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(param.grad, simclr_params[name].grad, msg=name)


def test_supcon_loss_is_supervised_tcl_with_k1_zero(digits):
    method = build("supcon", True, temperature=0.2)
    views, labels = _views_and_labels(digits)
    loss = method.training_loss(views, labels)
    z0, z1 = method.project_views(views, method.projection_head)
    # the official code's constant factor temperature / base_temperature (0.07)
    expected = 0.2 / 0.07 * TCLLoss(temperature=0.2, k1=0.0, k2=1.0)(z0, z1, labels=labels)
    torch.testing.assert_close(loss, expected)


def test_supcon_head_has_batch_norm_only_when_asked():
    def norms(method):
        return [type(m).__name__ for m in method.projection_head.modules() if isinstance(m, nn.BatchNorm1d)]

    assert norms(build("supcon", True)) == []  # the official head: Linear - ReLU - Linear
    assert norms(build("supcon", True, head_batch_norm=True)) == ["BatchNorm1d"] * 2  # as TCL's and SimCLR's heads
    with pytest.raises(ValueError, match="head_batch_norm must be true or false, got 'yes'"):
        build("supcon", True, head_batch_norm="yes")


def test_cross_entropy_is_the_classifiers_loss_on_every_view(digits):
    method = build("ce", True)
    views, labels = _views_and_labels(digits)
    logits = method.classifier(method.backbone(torch.cat(views)))
    expected = nn.functional.cross_entropy(logits, labels.repeat(2))
    torch.testing.assert_close(method.training_loss(views, labels), expected)


@pytest.mark.parametrize(
    "name,supervised,num_views,match",
    [
        (
            name,
            supervised,
            method_class(name).defaults.num_views,
            "self-supervised only" if supervised else "needs labels",
        )
        for name, supervised in WRONG_SETTINGS
    ]
    + _view_cases(),
)
def test_methods_refuse_settings_they_cannot_train(name, supervised, num_views, match):
    with pytest.raises(ValueError, match=match):
        method_class(name).check_setting(supervised, num_views)


def test_the_derived_setting_cases_include_the_known_ones():
    """The cases above come from the registry; these are among them while those methods exist."""
    assert {("supcon", False), ("ce", False), ("simclr", True), ("moco", True), ("byol", True)} <= set(WRONG_SETTINGS)
    views = {(name, num_views, message) for name, _, num_views, message in _view_cases()}
    assert ("byol", 3, "takes exactly 2 views per image") in views
    assert ("tcl", 1, "takes 2 or more views per image") in views


@pytest.mark.parametrize("name,supervised", WRONG_SETTINGS)
def test_a_method_built_in_the_wrong_setting_raises(name, supervised):
    with pytest.raises(ValueError, match="needs labels" if not supervised else "self-supervised only"):
        build(name, supervised)


@pytest.mark.parametrize("optimizer,cls_name", [("sgd", "SGD"), ("lars", "LARS")])
def test_optimizer_machinery_builds_sgd_or_lars_with_no_decay_on_norms_and_biases(optimizer, cls_name):
    method = build("byol")
    config = OptimConfig(lr=0.4, weight_decay=1e-5, warmup_epochs=0, batch_size=128, optimizer=optimizer)
    built = build_optimizer(method, config, world_size=4)
    assert type(built).__name__ == cls_name
    decayed, plain = built.param_groups
    assert decayed["lr"] == pytest.approx(0.4 * 128 * 4 / 256) and decayed["weight_decay"] == 1e-5
    assert plain["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in plain["params"])
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert {id(p) for g in built.param_groups for p in g["params"]} == trainable


class _StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


class _RecordMomentum(Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.values.append(pl_module.ema_momentum())


def _fit(method: Method, digits: Split, tmp_path, *, stop_after_first: bool = False, ckpt_path=None):
    record = _RecordMomentum()
    callbacks = [record, ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)]
    if stop_after_first:
        callbacks.append(_StopAfterFirstEpoch())
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = batch_loader(digits, BATCH, shuffle=False, drop_last=True)
    trainer.fit(method, train_dataloaders=loader, ckpt_path=ckpt_path)
    return record.values


@pytest.mark.parametrize("name", MOMENTUM)
def test_resumed_run_continues_schedule_targets_and_queue_exactly(digits, tmp_path, name):
    options = {"momentum_start": 0.9, "momentum_end": 0.99}
    whole = build(name, **options)
    whole_momenta = _fit(whole, digits, tmp_path / "whole")

    first = build(name, **options)
    first_momenta = _fit(first, digits, tmp_path / "part", stop_after_first=True)
    checkpoint = torch.load(tmp_path / "part" / "last.ckpt", weights_only=False)
    restored = build(name, seed=1, **options)  # other initial weights, empty queue
    restored.load_state_dict(checkpoint["state_dict"])
    for (key, value), expected in zip(restored.state_dict().items(), first.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)  # targets and queue included
    second_momenta = _fit(restored, digits, tmp_path / "part", ckpt_path=tmp_path / "part" / "last.ckpt")

    steps = 2 * (4 * BATCH // BATCH)
    assert whole_momenta == [cosine_schedule(s, steps, 0.9, 0.99) for s in range(steps)]
    assert first_momenta + second_momenta == whole_momenta
    for (key, value), expected in zip(restored.state_dict().items(), whole.state_dict().values()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_online_probe_learns_from_detached_features_without_weight_decay(digits, stream):
    torch.manual_seed(0)  # a backbone whose features keep the digits' shapes (7 x 7 mean-pooled pixels)
    backbone = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(49, 49))
    method = method_class("tcl")(backbone, 49, TwoFixedViews(), num_classes=10, **small_options("tcl"))
    views, labels = _views_and_labels(digits)
    # the probe's loss adds no gradient to the backbone, only to the probe
    method.zero_grad()
    method.training_loss(views, None).backward()
    alone = [p.grad.clone() for p in method.backbone.parameters()]
    method.zero_grad()
    method.training_step((views, labels), 0).backward()
    for expected, param in zip(alone, method.backbone.parameters()):
        torch.testing.assert_close(param.grad, expected)
    assert all(bool(p.grad.abs().sum() > 0) for p in method.online_classifier.parameters())
    method.backbone.requires_grad_(False)  # fixed features, so that the probe's progress is its own
    optimizer = build_optimizer(
        method,
        OptimConfig(lr=0.05, weight_decay=1e-3, warmup_epochs=0, batch_size=256),
        undecayed=method.online_classifier,
    )
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert decayed and not decayed & {id(p) for p in method.online_classifier.parameters()}

    def probe_loss() -> float:  # the probe's cross-entropy on held-out digits
        with torch.no_grad():
            features = method.backbone(_views_and_labels(digits, 2 * BATCH)[0][0])
            return float(
                nn.functional.cross_entropy(method.online_classifier(features), digits.labels[2 * BATCH : 3 * BATCH])
            )

    before = probe_loss()
    for step in range(100):
        train_views, train_labels = _views_and_labels(stream, BATCH * (step % (len(stream) // BATCH)))
        optimizer.zero_grad()
        method.training_step((train_views, train_labels), step).backward()
        optimizer.step()
    assert probe_loss() < 0.6 * before, (before, probe_loss())
