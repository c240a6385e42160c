"""Synthetic-aware classifier training: weighted loss of generated images, the real-only class prior, and cRT
(a fresh head re-trained on class-balanced real images), on tiny 8×8 sets that train in well under a second."""

import json
import math

import pytest
import torch

import diffbalance.classify.head_retrain as head_mod
import diffbalance.classify.step as step_mod
import diffbalance.classify.train as train_mod
from diffbalance.classify.augment import build_batch_mix, mix_batch, mix_values
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.head_retrain import class_balanced_indices, reset_head
from diffbalance.classify.losses import balanced_softmax_loss, build_loss, cross_entropy, log_class_prior
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.infra.seeding import generator

CPU = torch.device("cpu")
NEW_OPTIONS = ("synthetic_weight", "prior", "head_retrain_epochs", "head_retrain_lr")


def real_and_fills(n_real: int = 40, n_fill: int = 24) -> tuple[ImageSet, torch.Tensor]:
    """40 real images (dark class 0 : bright class 1 = 3 : 1), then 24 generated bright ones (class 1), 8×8;
    returns the concatenated set and its synthetic mask (False × 40, then True × 24)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([(torch.arange(n_real) % 4 == 0).long(), torch.ones(n_fill, dtype=torch.long)])
    base = torch.where(labels == 1, 180, 40)[:, None, None, None]
    images = (base + torch.randint(0, 40, (len(labels), 1, 8, 8), generator=g)).to(torch.uint8)
    synthetic = torch.arange(len(labels)) >= n_real
    return ImageSet(images, labels, ("dark", "bright")), synthetic


def tiny_config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.0, eval_batch_size=16, random_crop_padding=1)
    return TrainConfig(**{**base, **changes})


def state(clf) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clf.model.state_dict().items()}


def assert_same_weights(a: dict, b: dict, keys=None) -> None:
    for k in keys if keys is not None else a:
        assert torch.equal(a[k], b[k]), k


# --- defaults ------------------------------------------------------------------------------------------------


MIXED_RECIPE = {"batch_mix": "mixup_or_cutmix", "loss": "balanced_softmax", "label_smoothing": 0.1}


@pytest.mark.parametrize("recipe", [{}, MIXED_RECIPE])
def test_defaults_are_bit_identical_to_a_run_without_mask_or_options(recipe):
    data, synthetic = real_and_fills()
    plain = train_classifier(data, tiny_config(**recipe), device=CPU, seed=3, progress=False)
    explicit = tiny_config(**recipe, synthetic_weight=1.0, prior="train", head_retrain_epochs=0, head_retrain_lr=0.1)
    masked = train_classifier(data, explicit, device=CPU, seed=3, progress=False, synthetic=synthetic)
    assert_same_weights(state(plain), state(masked))
    assert torch.equal(plain.logits(data.images), masked.logits(data.images))


def test_bad_mask_is_a_one_line_error():
    data, synthetic = real_and_fills()
    for bad in (synthetic.long(), synthetic[:-1]):
        with pytest.raises(DiffbalanceError, match="synthetic must be a bool tensor") as err:
            train_classifier(data, tiny_config(), device=CPU, seed=0, progress=False, synthetic=bad)
        assert "\n" not in str(err.value)


# --- weighted loss -------------------------------------------------------------------------------------------


def _per_sample_ce(z, q):  # −Σ_k q_k log softmax(z)_k, one value per row
    return -(q * torch.log_softmax(z, dim=1)).sum(1)


def test_weighted_loss_is_the_weighted_mean_and_zero_weight_has_no_gradient():
    z = torch.randn(5, 3, generator=generator(0))
    y = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
    smoothed = 0.9 * torch.eye(3)[y] + 0.1 / 3
    want = (w * _per_sample_ce(z, smoothed)).sum() / w.sum()
    torch.testing.assert_close(cross_entropy(z, y, 0.1, w), want)
    torch.testing.assert_close(cross_entropy(z, smoothed, 0.0, w), want)  # soft targets (batch mixing)
    prior = log_class_prior([30, 10, 5])
    want_bal = (w * _per_sample_ce(z + prior, torch.eye(3)[y])).sum() / w.sum()
    torch.testing.assert_close(balanced_softmax_loss(z, y, prior, weights=w), want_bal)
    torch.testing.assert_close(build_loss("balanced_softmax", [30, 10, 5], 0.0, CPU)(z, y, w), want_bal)
    # all weights 1: the plain mean; scaling every weight leaves the loss (and so the lr) unchanged
    torch.testing.assert_close(cross_entropy(z, y, weights=torch.ones(5)), cross_entropy(z, y))
    torch.testing.assert_close(cross_entropy(z, y, weights=3 * w), cross_entropy(z, y, weights=w))

    logits = z.clone().requires_grad_(True)
    cross_entropy(logits, y, weights=w).backward()
    assert torch.equal(logits.grad[w == 0], torch.zeros(2, 3)) and logits.grad[w > 0].abs().sum() > 0
    none = z.clone().requires_grad_(True)
    loss = cross_entropy(none, y, weights=torch.zeros(5))  # a batch of generated images only, weight 0
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(none.grad, torch.zeros(5, 3))


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "mixup_or_cutmix"])
def test_a_mixed_sample_weighs_the_lambda_mix_of_its_two_weights(kind):
    x = torch.randn(8, 3, 8, 8, generator=generator(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    w = torch.tensor([1.0, 0.25, 0.25, 1.0, 1.0, 1.0, 0.25, 0.25])
    mix = build_batch_mix(kind, 1.0, 2)
    for seed in range(5):
        _, soft = mix_batch(mix, x, y, seed)
        lam = soft[1, 1]  # ỹ_1 = λ e_{y_1} + (1 − λ) e_{y_0} with y_1 = 1, y_0 = 0
        torch.testing.assert_close(mix_values(mix, x, w, seed), lam * w + (1 - lam) * w.roll(1, 0))
    both_zero = mix_values(mix, x, torch.zeros(8), 0)
    assert torch.equal(both_zero, torch.zeros(8))  # two weight-0 images make a weight-0 sample, exactly


def test_training_step_weights_follow_the_steps_own_mix():
    data, synthetic = real_and_fills()
    run = train_mod._build_run(data, tiny_config(synthetic_weight=0.25, batch_mix="mixup_or_cutmix"), CPU, 0, synthetic)
    idx = torch.tensor([1, 40, 2, 41, 3, 42, 5, 43])  # real dark (class 0) and generated bright (class 1) in turn
    x = torch.randn(8, 1, 8, 8, generator=generator(3))
    for step in range(4):
        _, soft = mix_batch(run.mix, x, data.labels[idx], train_mod.derive_seed(0, "mix", step))
        share = soft[:, 1]  # each mixed sample's generated share, λ s_i + (1 − λ) s_{i−1}, read off its labels
        torch.testing.assert_close(step_mod.loss_weights(run, idx, x, step), 1 - 0.75 * share)
    # unmixed: 1 for a real image, synthetic_weight for a generated one; every image weighing 1: no weights at all
    plain = train_mod._build_run(data, tiny_config(synthetic_weight=0.25), CPU, 0, synthetic)
    assert step_mod.loss_weights(plain, idx, x, 0).tolist() == [1.0, 0.25] * 4
    assert train_mod._build_run(data, tiny_config(), CPU, 0, synthetic).weighted is None


def test_with_weight_zero_the_labels_of_generated_images_do_not_matter():
    data, synthetic = real_and_fills()
    relabelled = ImageSet(data.images, torch.where(synthetic, 0, data.labels), data.class_names)
    cfg = tiny_config(synthetic_weight=0.0)
    a = train_classifier(data, cfg, device=CPU, seed=2, progress=False, synthetic=synthetic)
    b = train_classifier(relabelled, cfg, device=CPU, seed=2, progress=False, synthetic=synthetic)
    assert_same_weights(state(a), state(b))  # zero weight: zero gradient, whatever the label
    c = train_classifier(relabelled, cfg.replace(synthetic_weight=0.5), device=CPU, seed=2, progress=False,
                         synthetic=synthetic)
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_weighted_run_with_batch_mixing_is_seeded_and_finite():
    data, synthetic = real_and_fills()
    cfg = tiny_config(synthetic_weight=0.3, batch_mix="mixup_or_cutmix")
    a = train_classifier(data, cfg, device=CPU, seed=4, progress=False, synthetic=synthetic)
    b = train_classifier(data, cfg, device=CPU, seed=4, progress=False, synthetic=synthetic)
    assert_same_weights(state(a), state(b))
    assert torch.isfinite(a.logits(data.images)).all()


# --- class prior ---------------------------------------------------------------------------------------------


def test_real_prior_counts_only_the_real_images():
    data, synthetic = real_and_fills()
    real_counts, all_counts = [30, 10], [30, 34]  # 40 real (3 : 1) + 24 generated bright
    assert data.counts() == all_counts
    z = torch.randn(6, 2, generator=generator(2))
    y = torch.tensor([0, 1, 1, 0, 1, 1])
    runs = {}
    for prior in ("train", "real"):
        cfg = tiny_config(loss="balanced_softmax", prior=prior)
        runs[prior] = train_mod._build_run(data, cfg, CPU, 0, synthetic)
    want_real = torch.tensor([math.log(30 / 40), math.log(10 / 40)])
    torch.testing.assert_close(log_class_prior(real_counts), want_real)
    torch.testing.assert_close(runs["real"].loss_fn(z, y), balanced_softmax_loss(z, y, want_real))
    torch.testing.assert_close(runs["train"].loss_fn(z, y), balanced_softmax_loss(z, y, log_class_prior(all_counts)))
    assert not torch.allclose(runs["real"].loss_fn(z, y), runs["train"].loss_fn(z, y))
    # without a mask every image is real, so "real" is "train"
    unmasked = train_mod._build_run(data, tiny_config(loss="balanced_softmax", prior="real"), CPU, 0)
    torch.testing.assert_close(unmasked.loss_fn(z, y), runs["train"].loss_fn(z, y))


def test_real_prior_with_plain_ce_is_a_one_line_error():
    with pytest.raises(DiffbalanceError, match="prior") as err:
        TrainConfig.from_dict({"prior": "real"})  # loss: ce has no prior to replace
    assert "\n" not in str(err.value)
    assert TrainConfig.from_dict({"prior": "real", "loss": "balanced_softmax"}).prior == "real"


# --- head re-training (cRT) ----------------------------------------------------------------------------------


def test_class_balanced_sampler_draws_equal_counts_of_real_images_only():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 1, 1, 1, 2])
    real = torch.tensor([True] * 10 + [False] * 5)  # real: class 0 × 6, class 1 × 2, class 2 × 2
    drawn = class_balanced_indices(labels, real, generator(0))
    assert len(drawn) == 9  # R = 10 real images, rounded down to a multiple of C = 3 classes
    assert torch.bincount(labels[drawn], minlength=3).tolist() == [3, 3, 3]
    assert real[drawn].all()  # never a generated index
    assert torch.equal(drawn, class_balanced_indices(labels, real, generator(0)))  # seeded
    assert any(not torch.equal(drawn, class_balanced_indices(labels, real, generator(s))) for s in range(1, 5))
    # a class without real images is left out rather than filled with generated ones
    only_two = torch.tensor([True] * 8 + [False] * 7)  # class 2 has no real image
    drawn = class_balanced_indices(labels, only_two, generator(1))
    assert torch.bincount(labels[drawn], minlength=3).tolist() == [4, 4, 0] and only_two[drawn].all()


def test_reset_head_is_seeded_and_touches_only_the_head():
    data, _ = real_and_fills()
    model = train_mod._build_run(data, tiny_config(), CPU, 0).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    reset_head(model, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG untouched
    first = model.head.weight.clone()
    reset_head(model, seed=5)
    assert torch.equal(model.head.weight, first) and not torch.equal(first, before["head.weight"])
    assert_same_weights(before, model.state_dict(), [k for k in before if not k.startswith("head.")])


def test_head_retraining_changes_only_the_head_and_draws_real_images_only(monkeypatch):
    data, synthetic = real_and_fills()
    draws = []
    real_draw = head_mod.class_balanced_indices
    monkeypatch.setattr(head_mod, "class_balanced_indices", lambda *a: draws.append(real_draw(*a)) or draws[-1])
    stage1 = train_classifier(data, tiny_config(), device=CPU, seed=1, progress=False, synthetic=synthetic)
    both = train_classifier(data, tiny_config(head_retrain_epochs=2), device=CPU, seed=1, progress=False,
                            synthetic=synthetic)
    a, b = state(stage1), state(both)
    features = [k for k in a if not k.startswith("head.")]
    assert_same_weights(a, b, features)  # conv weights and batch-norm statistics frozen in stage 2
    assert torch.equal(stage1.features(data.images), both.features(data.images))
    assert not torch.equal(a["head.weight"], b["head.weight"])
    assert len(draws) == 2 and all(not synthetic[d].any() for d in draws)
    assert all(torch.bincount(data.labels[d]).tolist() == [20, 20] for d in draws)  # 40 real images, 2 classes
    assert not torch.equal(draws[0], draws[1])  # each epoch its own draw
    assert torch.equal(both.predict(data.images[:40]), data.labels[:40])  # trains and predicts
    assert both.config.head_retrain_epochs == 2


def test_head_retraining_end_to_end_is_seeded():
    data, synthetic = real_and_fills()
    cfg = tiny_config(epochs=1, head_retrain_epochs=1, head_retrain_lr=0.05, synthetic_weight=0.5,
                      loss="balanced_softmax", prior="real")
    a = train_classifier(data, cfg, device=CPU, seed=0, progress=False, synthetic=synthetic)
    b = train_classifier(data, cfg, device=CPU, seed=0, progress=False, synthetic=synthetic)
    assert_same_weights(state(a), state(b))
    assert a.predict(data.images).shape == (len(data),) and torch.isfinite(a.logits(data.images)).all()


def test_head_retraining_without_real_images_is_a_one_line_error():
    data, _ = real_and_fills()
    with pytest.raises(DiffbalanceError, match="needs real images") as err:
        train_classifier(data, tiny_config(head_retrain_epochs=1), device=CPU, seed=0, progress=False,
                         synthetic=torch.ones(len(data), dtype=torch.bool))
    assert "\n" not in str(err.value)


# --- resume --------------------------------------------------------------------------------------------------


def _interrupt(monkeypatch, name: str, at_epoch: int, ran: list) -> None:
    """Make train.<name> (an epoch function taking (run, ..., epoch, ...)) raise KeyboardInterrupt at `at_epoch`."""
    real = getattr(train_mod, name)
    epoch_arg = 1 if name == "_train_one_epoch" else 2

    def epoch_fn(*args):
        if args[epoch_arg] == at_epoch:
            raise KeyboardInterrupt
        ran.append((name, args[epoch_arg]))
        real(*args)

    monkeypatch.setattr(train_mod, name, epoch_fn)


@pytest.mark.parametrize(
    "stop, ran_after_resume",
    [
        (("_train_one_epoch", 1), [("_train_one_epoch", 1), ("retrain_head_epoch", 0), ("retrain_head_epoch", 1)]),
        (("retrain_head_epoch", 0), [("retrain_head_epoch", 0), ("retrain_head_epoch", 1)]),  # stage 1's end saved
        (("retrain_head_epoch", 1), [("retrain_head_epoch", 1)]),  # a stage-2 checkpoint after head epoch 1
    ],
)
def test_resume_in_either_stage_gives_the_same_weights(tmp_path, monkeypatch, stop, ran_after_resume):
    data, synthetic = real_and_fills()
    cfg = tiny_config(head_retrain_epochs=2, synthetic_weight=0.5, batch_mix="mixup")
    kwargs = dict(device=CPU, seed=1, progress=False, synthetic=synthetic)
    straight = state(train_classifier(data, cfg, **kwargs))

    ran = []
    _interrupt(monkeypatch, *stop, ran)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, cfg, checkpoint_dir=tmp_path, **kwargs)
    saved = json.loads((tmp_path / "resume" / "state.json").read_text())
    assert saved.get("head_epoch", 0) == (stop[1] if stop[0] == "retrain_head_epoch" else 0)
    monkeypatch.undo()

    ran = []
    for name in ("_train_one_epoch", "retrain_head_epoch"):
        _interrupt(monkeypatch, name, -1, ran)  # record only
    resumed = state(train_classifier(data, cfg, checkpoint_dir=tmp_path, **kwargs))
    assert ran == ran_after_resume
    assert_same_weights(straight, resumed)

    ran.clear()  # a finished run is reused without training
    again = state(train_classifier(data, cfg, checkpoint_dir=tmp_path, **kwargs))
    assert ran == [] and torch.equal(again["head.weight"], straight["head.weight"])
    with pytest.raises(DiffbalanceError, match="another run"):  # another mask is another run
        train_classifier(data, cfg, checkpoint_dir=tmp_path, **{**kwargs, "synthetic": synthetic.roll(1)})


def test_checkpoint_saved_before_the_new_options_resumes(tmp_path, monkeypatch):
    """An old checkpoint's config lacks the new keys; read with their defaults it is this run's config."""
    data, synthetic = real_and_fills()
    cfg = tiny_config()
    straight = state(train_classifier(data, cfg, device=CPU, seed=1, progress=False))
    _interrupt(monkeypatch, "_train_one_epoch", 1, [])
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    monkeypatch.undo()
    meta_file = tmp_path / "resume" / "state.json"
    meta = json.loads(meta_file.read_text())
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in NEW_OPTIONS}
    meta_file.write_text(json.dumps(meta))
    # the runner now passes a mask; with default options the run does not read it, so the old checkpoint fits
    resumed = train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False,
                               synthetic=synthetic)
    assert_same_weights(straight, state(resumed))
    with pytest.raises(DiffbalanceError, match="another run"):
        train_classifier(data, cfg.replace(synthetic_weight=0.5), device=CPU, seed=1, checkpoint_dir=tmp_path,
                         progress=False, synthetic=synthetic)


# --- config --------------------------------------------------------------------------------------------------


def test_new_options_round_trip():
    cfg = TrainConfig.from_dict({"synthetic_weight": 0, "prior": "real", "loss": "balanced_softmax",
                                 "head_retrain_epochs": 10, "head_retrain_lr": 1})
    assert isinstance(cfg.synthetic_weight, float) and isinstance(cfg.head_retrain_lr, float)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert {k: TrainConfig().to_dict()[k] for k in NEW_OPTIONS} == {
        "synthetic_weight": 1.0, "prior": "train", "head_retrain_epochs": 0, "head_retrain_lr": 0.1}


@pytest.mark.parametrize(
    "bad",
    [
        {"synthetic_weight": -0.5},
        {"synthetic_weight": float("inf")},
        {"synthetic_weight": "low"},
        {"prior": "uniform"},
        {"prior": "real"},  # with loss: ce
        {"head_retrain_epochs": -1},
        {"head_retrain_epochs": 1.5},
        {"head_retrain_lr": 0},
        {"head_retrain_lr": -0.1},
    ],
)
def test_bad_new_options_are_one_line_errors(bad):
    with pytest.raises(DiffbalanceError) as err:
        TrainConfig.from_dict(bad)
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)
