"""Feature fills (LDMLR, Han et al. 2024) in the classifier's head re-training: the feature diffusion model on toy
features, the per-class draw over real images and synthetic features, exactness against plain cRT, resume at any
point, and the config's one-line errors. Tiny 8×8 sets and a 16-wide MLP: the file runs in seconds on the CPU."""

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import diffbalance.classify.feature_fill as fill_mod
import diffbalance.classify.head_retrain as head_mod
import diffbalance.classify.train as train_mod
import diffbalance.generate.features.sample as sample_mod
import diffbalance.generate.features.train as feature_train_mod
from dist_helpers import free_port, join_gloo
from diffbalance.infra import distributed
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.feature_fill import synthetic_counts
from diffbalance.classify.head_retrain import SyntheticFeatures, class_balanced_indices, frozen_features, head_batch
from diffbalance.classify.train import train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError
from diffbalance.generate.features.config import FeatureFillConfig
from diffbalance.generate.features.sample import sample_features
from diffbalance.generate.features.train import train_feature_model
from diffbalance.infra.seeding import derive_seed, generator

CPU = torch.device("cpu")
REAL_COUNTS = [24, 10, 6]
TINY_FILL = dict(views=2, hidden=16, depth=1, train_steps=12, batch_size=16, num_train_timesteps=20,
                 num_inference_steps=4, checkpoint_every_steps=5)


def long_tailed_set() -> tuple[ImageSet, torch.Tensor]:
    """Real images 24 : 10 : 6 of three brightness classes, then 8 generated images (an image fill) of class 2,
    1×8×8; returns the set and its synthetic mask."""
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(REAL_COUNTS)] + [torch.full((8,), 2)])
    base = torch.tensor([30, 120, 210])[labels][:, None, None, None]
    images = (base + torch.randint(0, 40, (len(labels), 1, 8, 8), generator=g)).to(torch.uint8)
    return ImageSet(images, labels, ("dark", "grey", "bright")), torch.arange(len(labels)) >= sum(REAL_COUNTS)


def tiny_config(fill: dict | None = None, **changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.0, eval_batch_size=16, random_crop_padding=1,
                head_retrain_epochs=2, head_retrain_lr=0.05)
    feature_fill = None if fill is None else FeatureFillConfig(**{**TINY_FILL, **fill})
    return TrainConfig(**{**base, **changes, "feature_fill": feature_fill})


def state(clf) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clf.model.state_dict().items()}


def assert_same_weights(a: dict, b: dict, keys=None) -> None:
    for k in keys if keys is not None else a:
        assert torch.equal(a[k], b[k]), k


def train(data, cfg, synthetic, **kwargs):
    return train_classifier(data, cfg, device=CPU, seed=1, progress=False, synthetic=synthetic, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this file: its matrices are tiny (a second thread buys nothing), and a spinning second
    thread beside another busy process made the toy training 10× slower (30 s instead of 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the feature diffusion model on toy features ----------------------------------------------------------------

TOY_MODEL = FeatureFillConfig(hidden=64, depth=1, train_steps=150, batch_size=64, lr=1e-2, num_train_timesteps=100,
                              num_inference_steps=10)


@pytest.fixture(scope="module")
def toy():
    """Three separable Gaussian clusters in 8-D (σ 0.5, means ~3 apart) and a feature model trained on them."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 8, generator=g) * 3 + 5  # (K, D), not centred: the standardisation matters
    labels = torch.arange(3).repeat_interleave(150)
    features = means[labels] + 0.5 * torch.randn(len(labels), 8, generator=g)
    return means, features, labels, train_feature_model(features, labels, 3, TOY_MODEL, seed=0, progress=False)


def test_feature_model_loss_falls(toy):
    losses = toy[3].losses
    assert len(losses) == TOY_MODEL.train_steps
    assert abs(losses[0] - 1) < 0.3  # ε_θ ≡ 0 at init: the loss starts at E‖ε‖² / D = 1
    assert sum(losses[-15:]) / 15 < 0.7 * sum(losses[:15]) / 15  # the last 10 % of the steps against the first


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp", "ddpm"])
def test_sampled_features_lie_nearest_their_class_mean(toy, sampler):
    means, features, labels, trained = toy
    wanted = [c for c in range(3) for _ in range(20)]
    out = sample_features(trained.model, wanted, list(range(60)), TOY_MODEL.replace(sampler=sampler))
    assert out.shape == (60, 8) and torch.isfinite(out).all()
    nearest = torch.cdist(out, means).argmin(dim=1)  # (60,) the class mean each sample is closest to
    assert (nearest == torch.tensor(wanted)).float().mean() >= 0.9
    real_spread = features.std(dim=0).mean()  # samples are spread like the data, not collapsed onto the means
    assert 0.5 * real_spread < out.std(dim=0).mean() < 2 * real_spread


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_feature_k_depends_on_its_seed_alone(toy, sampler):
    model, cfg = toy[3].model, TOY_MODEL.replace(sampler=sampler)
    wanted = [0, 1, 2, 2, 1, 0, 1]
    seeds = [derive_seed(5, "feature_fill", c, j) for j, c in enumerate(wanted)]
    whole = sample_features(model, wanted, seeds, cfg)
    small_batches = sample_features(model, wanted, seeds, cfg, batch_size=3)
    torch.testing.assert_close(small_batches, whole, rtol=0, atol=1e-5)  # batched vs split matrix products
    torch.testing.assert_close(sample_features(model, wanted[2:5], seeds[2:5], cfg), whole[2:5], rtol=0, atol=1e-5)
    other = sample_features(model, wanted, [s + 1 for s in seeds], cfg)
    assert (other - whole).abs().amax(dim=1).min() > 1e-2  # another seed, another feature


# --- how many, and the per-class draw ---------------------------------------------------------------------------


def test_synthetic_counts():
    assert synthetic_counts([10, 4, 0, 7], 1.0) == [0, 6, 0, 3]  # up to the largest; no real images → none
    assert synthetic_counts([10, 4, 0, 7], 0.5) == [0, 3, 0, 2]  # 1.5 rounds half up
    assert synthetic_counts([10, 4, 0, 7], 0.0) == [0, 0, 0, 0]
    assert synthetic_counts([5, 5], 3.0) == [0, 0]


def test_class_balanced_draw_over_real_and_synthetic_members():
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2, 1])
    real = torch.tensor([True, True, True, True, True, True, False, False])  # class 2 has one real image
    synthetic_labels = torch.tensor([2, 1, 2, 2])  # indices 8, 9, 10, 11
    plain = class_balanced_indices(labels, real, generator(3))
    empty = class_balanced_indices(labels, real, generator(3), torch.zeros(0, dtype=torch.long))
    assert torch.equal(plain, empty)  # no synthetic features: the same draw from the same random numbers
    drawn = class_balanced_indices(labels, real, generator(3), synthetic_labels)
    assert len(drawn) == 6 // 3 * 3
    union_labels = torch.cat([labels, synthetic_labels])
    assert union_labels[drawn].bincount(minlength=3).tolist() == [2, 2, 2]  # class-balanced
    members = {0: {0, 1, 2, 3}, 1: {4, 9}, 2: {5, 8, 10, 11}}  # real then synthetic; never the generated image 6, 7
    assert all(int(i) in members[int(union_labels[i])] for i in drawn)
    many = torch.cat([class_balanced_indices(labels, real, generator(s), synthetic_labels) for s in range(200)])
    assert set(many.tolist()) == set().union(*members.values())  # every member is drawn


def test_head_batch_mixes_frozen_real_features_and_synthetic_ones():
    data, synthetic = long_tailed_set()
    cfg = tiny_config({})
    run = train_mod._build_run(data, cfg, CPU, 1, synthetic)
    stage = head_mod.build_head_stage(run.model, data.labels, ~synthetic, cfg)
    fake = torch.randn(3, run.model.head.in_features)
    stage.fill = SyntheticFeatures(fake, torch.tensor([1, 2, 2]), 0.25, {})
    n = len(data)
    idx = torch.tensor([n + 2, 3, n + 0, 30])  # synthetic 2, real 3, synthetic 0, real 30
    run.model.eval()
    features, labels, weights = head_batch(run, stage, idx, idx >= n, step=4)
    real = frozen_features(run, data.images[torch.tensor([3, 30])], derive_seed(1, "head_augment", 4))
    assert torch.equal(features[[0, 2]], fake[[2, 0]]) and torch.equal(features[[1, 3]], real)
    assert labels.tolist() == [2, 0, 1, 1] and weights.tolist() == [0.25, 1.0, 0.25, 1.0]
    plain = head_batch(run, stage, idx[[1, 3]], torch.tensor([False, False]), step=4)
    assert plain[2] is None and torch.equal(plain[0], real)  # no synthetic item: plain cRT's batch, no weights


# --- in train_classifier -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_crt():
    data, synthetic = long_tailed_set()
    return state(train(data, tiny_config(), synthetic))


def test_factor_zero_is_plain_crt_bit_for_bit(plain_crt, tmp_path):
    data, synthetic = long_tailed_set()
    filled = train(data, tiny_config({"factor": 0.0}), synthetic)
    assert_same_weights(plain_crt, state(filled))
    assert filled.feature_fill["synthetic_per_class"] == [0, 0, 0]
    assert filled.feature_fill["feature_model_steps"] == 0  # nothing to sample: no feature model is trained
    checkpointed = train(data, tiny_config({"factor": 0.0}), synthetic, checkpoint_dir=tmp_path)
    assert_same_weights(plain_crt, state(checkpointed))  # its (empty) features saved, and read back on a rerun
    assert (tmp_path / "feature-fill" / "features" / "features.safetensors").is_file()
    assert_same_weights(plain_crt, state(train(data, tiny_config({"factor": 0.0}), synthetic, checkpoint_dir=tmp_path)))


def test_feature_fill_trains_the_head_on_real_and_synthetic_features(plain_crt, monkeypatch, tmp_path):
    data, synthetic = long_tailed_set()
    draws = []
    real_draw = head_mod.class_balanced_indices
    monkeypatch.setattr(head_mod, "class_balanced_indices", lambda *a: draws.append(real_draw(*a)) or draws[-1])
    forbidden = lambda *a, **k: pytest.fail("nothing may be written without a checkpoint folder")  # noqa: E731
    monkeypatch.setattr(fill_mod, "write_folder", forbidden)
    monkeypatch.setattr(feature_train_mod, "save_training_state", forbidden)
    monkeypatch.chdir(tmp_path)
    filled = train(data, tiny_config({"synthetic_weight": 0.5}), synthetic)
    assert list(tmp_path.iterdir()) == []
    after = state(filled)
    backbone = [k for k in after if not k.startswith("head.")]
    assert_same_weights(plain_crt, after, backbone)  # extraction leaves the frozen network alone
    assert not torch.equal(after["head.weight"], plain_crt["head.weight"])
    summary = filled.feature_fill
    assert summary["real_per_class"] == REAL_COUNTS  # the image fill (8 generated images of class 2) is not counted
    assert summary["synthetic_per_class"] == [0, 14, 18] and summary["views"] == 2
    assert summary["feature_model_steps"] == 12 and summary["feature_model_loss_start"] > 0
    json.dumps(summary)  # JSON-able for results.json
    n = len(data)
    assert len(draws) == 2 and all(bool((d >= n).any()) for d in draws)  # synthetic features are drawn
    assert all(not bool(synthetic[d[d < n]].any()) for d in draws)  # generated images never reach the head


def test_saved_classifier_keeps_the_fill_summary(tmp_path):
    data, synthetic = long_tailed_set()
    clf = train(data, tiny_config({"train_steps": 3}), synthetic)
    clf.save(tmp_path / "clf")
    loaded = train_mod.TrainedClassifier.load(tmp_path / "clf", CPU)
    assert loaded.feature_fill == clf.feature_fill and loaded.config.feature_fill == clf.config.feature_fill


# --- resume ------------------------------------------------------------------------------------------------------


def _count_calls(monkeypatch, module, name: str, calls: list, stop_at: int | None = None) -> None:
    """Record calls of module.<name>; raise KeyboardInterrupt at call number `stop_at` (0-based)."""
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _interrupt_head_epoch(monkeypatch, at_epoch: int) -> None:
    real = train_mod.retrain_head_epoch

    def epoch_fn(run, stage, epoch, advance):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        real(run, stage, epoch, advance)

    monkeypatch.setattr(train_mod, "retrain_head_epoch", epoch_fn)


@pytest.mark.parametrize(
    "stop, steps_after_resume, samples_after_resume",
    [
        ("feature_step_8", 12 - 5, 1),  # mid feature-model training: resumes from its step-5 checkpoint
        ("head_epoch_0", 0, 0),  # after sampling, before stage 2's first checkpoint: the features are read back
        ("head_epoch_1", 0, 0),  # mid stage 2
    ],
)
def test_resume_at_any_point_gives_the_same_weights(tmp_path, monkeypatch, stop, steps_after_resume,
                                                    samples_after_resume):
    data, synthetic = long_tailed_set()
    cfg = tiny_config({"synthetic_weight": 0.5, "guidance_w": 2.0})
    straight = state(train(data, cfg, synthetic))

    steps: list = []
    if stop.startswith("feature_step"):
        _count_calls(monkeypatch, feature_train_mod, "feature_ddpm_loss", steps, stop_at=int(stop.split("_")[-1]))
    else:
        _interrupt_head_epoch(monkeypatch, int(stop.split("_")[-1]))
    with pytest.raises(KeyboardInterrupt):
        train(data, cfg, synthetic, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    fills = tmp_path / "feature-fill"
    assert (fills / "train" / "state.json").is_file()
    assert (fills / "features" / "features.json").is_file() == (not stop.startswith("feature_step"))

    steps, samples = [], []
    _count_calls(monkeypatch, feature_train_mod, "feature_ddpm_loss", steps)
    _count_calls(monkeypatch, sample_mod, "sample_features", samples)
    resumed = train(data, cfg, synthetic, checkpoint_dir=tmp_path)
    assert (len(steps), len(samples)) == (steps_after_resume, samples_after_resume)
    assert_same_weights(straight, state(resumed))
    assert resumed.feature_fill["feature_model_steps"] == 12


def test_stage_two_checkpoint_without_its_features_is_a_one_line_error(tmp_path, monkeypatch):
    data, synthetic = long_tailed_set()
    cfg = tiny_config({})
    _interrupt_head_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(data, cfg, synthetic, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    for part in (tmp_path / "feature-fill" / "features").iterdir():
        part.unlink()
    with pytest.raises(DiffbalanceError, match="synthetic features are missing") as err:
        train(data, cfg, synthetic, checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_features_of_another_run_are_refused(tmp_path):
    data, synthetic = long_tailed_set()
    train(data, tiny_config({"train_steps": 3}), synthetic, checkpoint_dir=tmp_path)
    for part in (tmp_path / "resume").iterdir():  # only the feature fill's files are left
        part.unlink()
    with pytest.raises(DiffbalanceError, match="another run") as err:
        train(data, tiny_config({"train_steps": 3, "guidance_w": 3.0}), synthetic, checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value)
    for part in (tmp_path / "resume").iterdir():  # (that run wrote its stage 1 before it was refused)
        part.unlink()
    # how often the feature model checkpoints does not change the weights: the same run
    train(data, tiny_config({"train_steps": 3, "checkpoint_every_steps": 1}), synthetic, checkpoint_dir=tmp_path)


# --- DDP --------------------------------------------------------------------------------------------------------


def _rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: a filled run, its weights and summary saved to out/rank<r>.pt; who wrote what."""
    device = join_gloo(rank, 2, port)
    writes = []
    real_write, real_save = fill_mod.write_folder, feature_train_mod.save_training_state
    fill_mod.write_folder = lambda *a, **k: (writes.append("features"), real_write(*a, **k))
    feature_train_mod.save_training_state = lambda *a, **k: (writes.append("train"), real_save(*a, **k))
    data, synthetic = long_tailed_set()
    clf = train_classifier(data, tiny_config({}), device=device, seed=1, progress=False, synthetic=synthetic,
                           checkpoint_dir=Path(out) / "ckpt")
    torch.save({"weights": state(clf), "summary": clf.feature_fill, "writes": writes}, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def test_every_rank_fills_alike_and_rank0_alone_writes(tmp_path):
    # fork: the ranks inherit this process's imports and start at once (as tests/test_dist_classify.py)
    mp.start_processes(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert_same_weights(r0["weights"], r1["weights"])
    assert r0["summary"]["synthetic_per_class"] == r1["summary"]["synthetic_per_class"] == [0, 14, 18]
    assert r0["summary"]["feature_model_loss_end"] == r1["summary"]["feature_model_loss_end"]
    assert r0["writes"] == ["train", "train", "train", "features"] and r1["writes"] == []  # steps 5, 10, 12
    assert sorted(p.name for p in (tmp_path / "ckpt" / "feature-fill").iterdir()) == ["features", "train"]
    data, synthetic = long_tailed_set()  # the finished job's folder is read back at world size 1, nothing redone
    again = train(data, tiny_config({}), synthetic, checkpoint_dir=tmp_path / "ckpt")
    assert_same_weights(r0["weights"], state(again))


# --- config ------------------------------------------------------------------------------------------------------


def test_config_round_trips():
    cfg = TrainConfig.from_dict({"head_retrain_epochs": 3, "feature_fill": {"views": 2, "factor": 1, "lr": 1}})
    assert isinstance(cfg.feature_fill, FeatureFillConfig) and isinstance(cfg.feature_fill.factor, float)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig().feature_fill is None and TrainConfig().to_dict()["feature_fill"] is None


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"feature_fill": {}}, "head_retrain_epochs"),  # the fill feeds stage 2, which is off
        ({"head_retrain_epochs": 1, "feature_fill": {"views": 0}}, "views"),
        ({"head_retrain_epochs": 1, "feature_fill": {"factor": -1}}, "factor"),
        ({"head_retrain_epochs": 1, "feature_fill": {"factor": float("inf")}}, "factor"),
        ({"head_retrain_epochs": 1, "feature_fill": {"p_uncond": 1.0}}, "p_uncond"),
        ({"head_retrain_epochs": 1, "feature_fill": {"p_uncond": 0.0}}, "guidance_w"),  # w > 0 needs ε(x, ∅)
        ({"head_retrain_epochs": 1, "feature_fill": {"num_inference_steps": 2000}}, "num_inference_steps"),
        ({"head_retrain_epochs": 1, "feature_fill": {"sampler": "euler"}}, "sampler"),
        ({"head_retrain_epochs": 1, "feature_fill": {"synthetic_weight": -0.5}}, "synthetic_weight"),
        ({"head_retrain_epochs": 1, "feature_fill": {"train_steps": 0}}, "train_steps"),
        ({"head_retrain_epochs": 1, "feature_fill": {"depth": 0}}, "depth"),
        ({"head_retrain_epochs": 1, "feature_fill": {"viewz": 2}}, "viewz"),
        ({"head_retrain_epochs": 1, "feature_fill": 4}, "feature_fill"),
    ],
)
def test_bad_options_are_one_line_errors(bad, key):
    with pytest.raises(DiffbalanceError) as err:
        TrainConfig.from_dict(bad, path="train")
    text = str(err.value)
    assert "\n" not in text and " — fix: " in text and key in text
