"""Training on a tiny separable problem (40 images, 8×8): learning, determinism, resume, save/load, schedules."""

import pytest
import torch
import torch.nn.functional as F

import diffbalance.classify.train as train_mod
from diffbalance.infra.checkpoint import load_training_state, save_training_state
from diffbalance.classify.augment import normalize
from diffbalance.classify.config import TrainConfig
from diffbalance.classify.ema import ema_copy, ema_update
from diffbalance.classify.schedule import scaled_lr
from diffbalance.classify.train import TrainedClassifier, lr_factor, train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.infra.errors import DiffbalanceError

CPU = torch.device("cpu")


def tiny_set(n: int = 40, channels: int = 1) -> ImageSet:
    """Two classes: dark images (label 0) and bright images (label 1), 8×8, a 3:1 imbalance."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(n) % 4 == 0).long()
    base = torch.where(labels == 1, 180, 40)[:, None, None, None]
    images = (base + torch.randint(0, 40, (n, channels, 8, 8), generator=g)).to(torch.uint8)
    return ImageSet(images, labels, ("dark", "bright"))


def tiny_config(**changes) -> TrainConfig:
    base = dict(epochs=3, batch_size=8, lr=0.05, warmup_epochs=0.0, eval_batch_size=16, random_crop_padding=1)
    return TrainConfig(**{**base, **changes})


def _ce(model, data, mean, std):
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(normalize(data.images, mean, std)), data.labels))


def test_training_reduces_the_loss_and_separates_the_classes():
    data = tiny_set()
    cfg = tiny_config()
    initial = train_mod._build_run(data, cfg, CPU, seed=0)  # the same seeded initial weights as the run below
    clf = train_classifier(data, cfg, device=CPU, seed=0, progress=False)
    assert _ce(clf.model, data, clf.mean, clf.std) < 0.5 * _ce(initial.model, data, clf.mean, clf.std)
    assert torch.equal(clf.predict(data.images), data.labels)
    assert clf.train_seconds > 0 and clf.class_names == ("dark", "bright")


def test_same_seed_same_weights_other_seed_differs():
    data = tiny_set()
    cfg = tiny_config(epochs=1, batch_mix="mixup_or_cutmix", loss="balanced_softmax", label_smoothing=0.1)
    a = train_classifier(data, cfg, device=CPU, seed=3, progress=False)
    b = train_classifier(data, cfg, device=CPU, seed=3, progress=False)
    c = train_classifier(data, cfg, device=CPU, seed=4, progress=False)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert torch.equal(a.logits(data.images), b.logits(data.images))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data = tiny_set()
    cfg = tiny_config(epochs=2, schedule="onecycle")
    straight = train_classifier(data, cfg, device=CPU, seed=1, progress=False)

    epochs_run = []
    real_epoch = train_mod._train_one_epoch

    def interrupt_in_epoch_2(run, epoch, advance, since):
        if epoch == 1:
            raise KeyboardInterrupt
        epochs_run.append(epoch)
        real_epoch(run, epoch, advance, since)

    monkeypatch.setattr(train_mod, "_train_one_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert epochs_run == [0] and (tmp_path / "resume" / "state.json").is_file()

    monkeypatch.setattr(train_mod, "_train_one_epoch", lambda *a: (epochs_run.append(a[1]), real_epoch(*a)))
    resumed = train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert epochs_run == [0, 1]  # only the second epoch ran again
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    # a finished checkpoint is reused without training; another seed or config is refused
    again = train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert epochs_run == [0, 1] and torch.equal(again.model.head.weight, straight.model.head.weight)
    with pytest.raises(DiffbalanceError):
        train_classifier(data, cfg, device=CPU, seed=2, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(DiffbalanceError):
        train_classifier(data, cfg.replace(lr=0.1), device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)


def test_save_load_round_trip(tmp_path):
    data = tiny_set(channels=3)
    clf = train_classifier(data, tiny_config(epochs=1), device=CPU, seed=0, progress=False)
    clf.save(tmp_path / "clf")
    back = TrainedClassifier.load(tmp_path / "clf", CPU)
    assert TrainedClassifier.load(tmp_path / "clf").device == CPU  # "auto" on a machine without CUDA
    assert TrainedClassifier.load(tmp_path / "clf", "cpu").device == CPU
    assert back.config == clf.config and back.class_names == clf.class_names and back.mean == clf.mean
    assert torch.equal(back.logits(data.images), clf.logits(data.images))
    assert torch.equal(back.predict(data.images), clf.predict(data.images))
    feats = back.features(data.images, batch_size=7)
    assert feats.shape == (40, back.model.feature_dim)
    torch.testing.assert_close(feats, clf.features(data.images))
    assert back.logits(data.images[:0]).shape == (0, 2)
    with pytest.raises(DiffbalanceError):
        back.predict(data.images.float())
    with pytest.raises(DiffbalanceError):
        TrainedClassifier.load(tmp_path / "missing", CPU)


def test_resnet_trains_a_step():
    clf = train_classifier(tiny_set(n=16), tiny_config(model="resnet18", epochs=1), device=CPU, seed=0, progress=False)
    assert torch.isfinite(clf.logits(tiny_set(n=16).images)).all()


def test_lr_schedules():
    f = [lr_factor(s, schedule="cosine", warmup_steps=4, total_steps=20) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0 and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f[4:], f[5:]))  # monotone decay after the warmup
    # onecycle equals torch's OneCycleLR with fixed momentum
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=50, pct_start=0.2, cycle_momentum=False)
    for s in range(50):
        expected = opt.param_groups[0]["lr"]
        assert lr_factor(s, schedule="onecycle", warmup_steps=10, total_steps=50) * 0.1 == pytest.approx(expected)
        opt.step()
        ref.step()


def test_too_small_training_set():
    one = ImageSet(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), ("a", "b"))
    with pytest.raises(DiffbalanceError):
        train_classifier(one, tiny_config(), device=CPU, seed=0, progress=False)


def test_device_is_given_by_name():
    data = tiny_set(n=16)
    a = train_classifier(data, tiny_config(epochs=1), device="cpu", seed=0, progress=False)
    b = train_classifier(data, tiny_config(epochs=1), device=CPU, seed=0, progress=False)
    assert a.device == CPU and torch.equal(a.model.head.weight, b.model.head.weight)
    with pytest.raises(DiffbalanceError):
        train_classifier(data, tiny_config(epochs=1), device="tpu", seed=0, progress=False)


def test_resume_folder_keeps_the_classifier_format(tmp_path):
    """The layout old run folders have on disk: state.safetensors with model.* and optimizer.<i>.<key>, and
    state.json with optimizer_param_groups, optimizer_plain_state and scheduler beside the run's own keys."""
    data = tiny_set()
    train_classifier(data, tiny_config(epochs=1), device=CPU, seed=0, checkpoint_dir=tmp_path, progress=False)
    state = load_training_state(tmp_path / "resume")
    assert {k.split(".")[0] for k in state.tensors} == {"model", "optimizer"}
    assert any(k.startswith("optimizer.0.") and k.endswith("momentum_buffer") for k in state.tensors)
    assert {"optimizer_param_groups", "optimizer_plain_state", "scheduler", "epoch", "seed", "config"} <= set(state.meta)


def _adamw_run(seed: int = 0):
    torch.manual_seed(seed)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    return model, ema, opt, sched


def _step(model, opt, sched, x):
    opt.zero_grad()
    model(x).square().sum().backward()
    opt.step()
    sched.step()


def test_shared_checkpoint_round_trip_is_bit_identical(tmp_path):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    model, ema, opt, sched = _adamw_run()
    for _ in range(2):
        _step(model, opt, sched, x)
    save_training_state(tmp_path / "ckpt", {"model": model, "ema": ema}, opt, sched, meta={"step": 2})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"state.safetensors", "state.json"}  # no pickle
    state = load_training_state(tmp_path / "ckpt")
    assert state.meta["step"] == 2 and state.tensors["optimizer.0.step"].shape == ()  # AdamW's 0-dim step
    back_model, back_ema, back_opt, back_sched = _adamw_run(seed=5)  # other initial weights
    state.restore({"model": back_model, "ema": back_ema}, back_opt, back_sched)
    for a, b in ((model, back_model), (ema, back_ema)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    _step(model, opt, sched, x)
    _step(back_model, back_opt, back_sched, x)  # the next step continues exactly
    assert torch.equal(model.weight, back_model.weight) and sched.get_last_lr() == back_sched.get_last_lr()
    assert load_training_state(tmp_path / "none") is None
    with pytest.raises(ValueError):
        save_training_state(tmp_path / "bad", {"optimizer": model}, opt)


def _weights(clf) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clf.model.state_dict().items()}


def test_lr_scales_linearly_with_the_batch_when_a_reference_batch_is_given():
    assert scaled_lr(0.1, 512, 128) == pytest.approx(0.4) and scaled_lr(0.1, 512, 0) == 0.1
    data = tiny_set()
    for ref, want in ((0, 0.05), (4, 0.1), (16, 0.025)):  # batch 8
        run = train_mod._build_run(data, tiny_config(lr_reference_batch=ref), CPU, seed=0)
        assert run.optimizer.param_groups[0]["initial_lr"] == pytest.approx(want)
    same = train_classifier(data, tiny_config(epochs=1, lr=0.1, lr_reference_batch=16), device=CPU, seed=0,
                            progress=False)
    plain = train_classifier(data, tiny_config(epochs=1, lr=0.05), device=CPU, seed=0, progress=False)
    assert torch.allclose(same.model.head.weight, plain.model.head.weight)


def test_ema_update_is_the_moving_average_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ema_copy(model)
    assert not any(p.requires_grad for p in ema.parameters())
    before = ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema_update(ema, model, decay=0.75)
    torch.testing.assert_close(ema[0].weight, 0.75 * before + 0.25 * model[0].weight)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_ema_run_returns_the_average_and_resumes_exactly(tmp_path, monkeypatch):
    data = tiny_set()
    cfg = tiny_config(epochs=2, ema_decay=0.8, cutout=3)
    straight = train_classifier(data, cfg, device=CPU, seed=1, progress=False)
    raw = train_classifier(data, cfg.replace(ema_decay=0.0), device=CPU, seed=1, progress=False)
    assert not torch.equal(straight.model.head.weight, raw.model.head.weight)  # the average, not the last weights
    assert torch.equal(straight.predict(data.images), data.labels)

    real_epoch = train_mod._train_one_epoch

    def interrupt_in_epoch_2(run, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        real_epoch(run, epoch, *args)

    monkeypatch.setattr(train_mod, "_train_one_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert {k.split(".")[0] for k in load_training_state(tmp_path / "resume").tensors} == {"model", "ema", "optimizer"}
    monkeypatch.undo()
    resumed = train_classifier(data, cfg, device=CPU, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert all(torch.equal(v, _weights(resumed)[k]) for k, v in _weights(straight).items())


def test_auto_checkpoints_about_four_times_a_stage(tmp_path, monkeypatch):
    saved = []
    real_save = train_mod.save_training_state
    monkeypatch.setattr(train_mod, "save_training_state", lambda f, m, o, s, meta: (saved.append(meta["epoch"]),
                                                                                    real_save(f, m, o, s, meta)))
    train_classifier(tiny_set(n=16), tiny_config(epochs=6), device=CPU, seed=0, checkpoint_dir=tmp_path,
                     progress=False)
    assert saved == [2, 4, 6]  # every ⌈6 / 4⌉ = 2 epochs


def test_single_process_ignores_ddp_and_sync_batchnorm():
    data = tiny_set()
    plain = train_classifier(data, tiny_config(epochs=1), device=CPU, seed=0, progress=False)
    for kwargs, changes in (({"ddp": True}, {}), ({}, {"sync_batchnorm": True})):
        other = train_classifier(data, tiny_config(epochs=1, **changes), device=CPU, seed=0, progress=False, **kwargs)
        assert all(torch.equal(v, _weights(other)[k]) for k, v in _weights(plain).items())
