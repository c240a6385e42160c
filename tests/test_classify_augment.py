import torch

from diffbalance.classify.augment import (
    augment_batch,
    build_batch_mix,
    channel_mean_std,
    crop_at,
    cutout,
    mix_batch,
    normalize,
    random_crop,
    random_horizontal_flip,
    stats_tensor,
)
from diffbalance.infra.seeding import forked_rng, generator


def test_crop_at_moves_content_by_the_offset():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3).repeat(2, 1, 1, 1)  # [[1 2 3] [4 5 6] [7 8 9]]
    out = crop_at(x, padding=1, offsets=torch.tensor([[0, 0], [2, 1]]))
    assert out.shape == x.shape and out.dtype == torch.uint8
    # offset (0, 0): the window starts in the padding, so the image moves down-right by one, zeros enter
    assert out[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 4, 5]]
    # offset (2, 1): the window starts one row below the image's top, so it moves up by one
    assert out[1, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]


def test_random_crop_matches_per_image_slices_and_is_seeded():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=generator(0))
    out = random_crop(x, 2, generator(5))
    offsets = torch.randint(0, 5, (16, 2), generator=generator(5))  # the same draws
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for n, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[n], padded[n, :, dy : dy + 8, dx : dx + 8])
    assert torch.equal(out, random_crop(x, 2, generator(5)))
    assert random_crop(x, 0, generator(5)) is x


def test_flip_mirrors_a_seeded_subset():
    x = torch.randint(0, 256, (32, 1, 4, 5), dtype=torch.uint8, generator=generator(1))
    assert torch.equal(random_horizontal_flip(x, generator(0), p=1.0), x.flip(3))
    assert torch.equal(random_horizontal_flip(x, generator(0), p=0.0), x)
    out = random_horizontal_flip(x, generator(3))
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    assert all(torch.equal(o, xi) or f for o, xi, f in zip(out, x, flipped))
    assert 0 < sum(flipped) < 32
    assert torch.equal(out, random_horizontal_flip(x, generator(3)))
    assert augment_batch(x, padding=1, horizontal_flip=True, generator=generator(2)).shape == x.shape


def test_mean_std_and_normalize():
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=generator(0))
    mean, std = channel_mean_std(x, chunk_size=3)
    f = x.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), f.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), f.std(dim=(0, 2, 3), unbiased=False))
    z = normalize(x, mean, std)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_batch_mix_is_seeded_and_leaves_the_global_rng_alone():
    x = torch.randn(8, 3, 8, 8, generator=generator(0))
    y = torch.arange(8) % 4
    for kind in ("mixup", "cutmix", "mixup_or_cutmix"):
        mix = build_batch_mix(kind, 1.0, 4)
        before = torch.get_rng_state()
        a_x, a_y = mix_batch(mix, x, y, seed=11)
        assert torch.equal(torch.get_rng_state(), before)
        b_x, b_y = mix_batch(mix, x, y, seed=11)
        assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)
        assert a_x.shape == x.shape and a_y.shape == (8, 4)
        torch.testing.assert_close(a_y.sum(1), torch.ones(8))
    assert build_batch_mix("none", 1.0, 4) is None


def test_batch_mix_draws_from_the_cpu_rng_forked_and_seeded_with_the_step_seed():
    x, y = torch.randn(8, 3, 8, 8, generator=generator(1)), torch.arange(8) % 4
    mix = build_batch_mix("mixup_or_cutmix", 1.0, 4)
    with forked_rng(23):  # what mix_batch promises: the same draws as a forked CPU RNG seeded with `seed`
        want_x, want_y = mix(x, y)
    got_x, got_y = mix_batch(mix, x, y, seed=23)
    assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)


def test_cutout_zeroes_one_clipped_square_per_image_and_is_seeded():
    x = torch.ones(64, 2, 9, 9)
    out = cutout(x, 4, generator(0))
    holes = (out == 0).all(dim=1)  # (N, H, W): both channels zeroed together
    assert torch.equal(out == 0, holes[:, None].expand_as(out))
    for hole in holes:
        rows, cols = hole.any(dim=1).nonzero().squeeze(1), hole.any(dim=0).nonzero().squeeze(1)
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4 and hole.sum() == len(rows) * len(cols)  # one rectangle
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()
    assert (holes.sum(dim=(1, 2)) == 16).any() and (holes.sum(dim=(1, 2)) < 16).any()  # inside, and clipped
    assert torch.equal(out, cutout(x, 4, generator(0))) and not torch.equal(out, cutout(x, 4, generator(1)))
    assert cutout(x, 0, generator(0)) is x
    u8 = torch.full((3, 1, 5, 5), 200, dtype=torch.uint8)
    assert cutout(u8, 5, generator(2)).dtype == torch.uint8


def test_normalize_takes_cached_device_tensors():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=generator(0))
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    cached = stats_tensor(mean, x.device), stats_tensor(std, x.device)
    assert cached[0].shape == (1, 3, 1, 1) and cached[0].dtype == torch.float32
    assert torch.equal(normalize(x, *cached), normalize(x, mean, std))
