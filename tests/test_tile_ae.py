"""T-AE pretraining parts: tiles and permutations, the network, the loss, and the encoder hand-over."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mimtl.engines import TileAEPrepareBatch, tile_ae_outputs
from mimtl.losses import TileAELoss, sliced_wasserstein
from mimtl.networks import AuxReconSegNet, TileAutoencoder, TileAutoencoderReconstruction
from mimtl.transforms import (
    RandTileShuffle,
    RandTileShuffled,
    TileShuffle,
    TileShuffled,
    min_hamming_distance,
    permutation_set,
    shuffle_tiles,
    tile_image,
    untile_image,
)
from mimtl.transforms.tiles import _greedy_set


# ---------------------------------------------------------------------------------------- tiles
def test_tile_round_trip_and_numbering():
    x = torch.arange(2 * 3 * 6 * 9, dtype=torch.float32).reshape(2, 3, 6, 9)
    tiles = tile_image(x)
    assert tiles.shape == (2, 9, 3, 2, 3)
    # tile k covers mosaic row k // 3 and column k % 3
    assert torch.equal(tiles[:, 5], x[:, :, 2:4, 6:9])
    assert torch.equal(untile_image(tiles), x)
    assert torch.equal(untile_image(tile_image(x[0])), x[0])  # unbatched (C, H, W) too


def test_shuffle_puts_original_tile_p_i_at_position_i_and_inverse_restores():
    x = torch.rand(1, 12, 12)
    perms = permutation_set()
    for index in (0, 1, 37, 99):
        p = perms[index]
        shuffled = shuffle_tiles(x, p)
        for i in range(9):
            assert torch.equal(tile_image(shuffled)[i], tile_image(x)[p[i]])
        assert torch.equal(shuffle_tiles(shuffled, np.argsort(p)), x)
        assert torch.equal(shuffle_tiles(shuffled, TileShuffle().inverse_permutation(index)), x)


def test_image_not_divisible_into_tiles_is_refused():
    with pytest.raises(ValueError, match="cannot be cut into 3 x 3"):
        tile_image(torch.rand(1, 10, 12))


def test_permutation_set_is_the_stored_greedy_max_min_hamming_set():
    perms = permutation_set()
    assert perms.shape == (100, 9)
    assert list(perms[0]) == list(range(9))  # class 0 = order kept
    assert len({tuple(p) for p in perms}) == 100
    assert all(sorted(p) == list(range(9)) for p in perms)
    # the public code's set had minimum distance 2 (two tiles swapped)
    assert min_hamming_distance(perms) == 6
    # the stored table is what the greedy search gives (deterministic), and smaller sets are its prefixes
    assert np.array_equal(np.array(_greedy_set(100, 3)), perms)
    assert np.array_equal(permutation_set(10), perms[:10])
    assert min_hamming_distance(permutation_set(10)) >= 6


def test_greedy_set_on_a_small_grid_is_searched_and_maximally_spread():
    # 2 x 2 grid: 24 orders; 4 of them pairwise differ in all 4 positions (a Latin square)
    perms = permutation_set(4, grid=2)
    assert min_hamming_distance(perms) == 4
    assert list(perms[0]) == [0, 1, 2, 3]


def test_rand_tile_shuffle_keeps_the_order_with_p_keep_and_is_seeded():
    t = RandTileShuffle(p_keep=0.7).set_random_state(0)
    x = torch.rand(1, 9, 9)
    indices = []
    for _ in range(2000):
        out = t(x)
        indices.append(t.index)
        assert torch.equal(out, shuffle_tiles(x, t.shuffler.permutations[t.index]))
    kept = np.mean(np.array(indices) == 0)
    assert abs(kept - 0.7) < 0.035, kept  # 3.5 standard errors
    assert set(indices) - {0} <= set(range(1, 100)) and len(set(indices)) > 90
    again = RandTileShuffle(p_keep=0.7).set_random_state(0)
    assert [again(x) is not None and again.index for _ in range(50)] == indices[:50]


def test_rand_tile_shuffled_stores_index_and_original_and_shuffles_every_key_alike():
    x = torch.rand(1, 18, 18)
    t = RandTileShuffled(keys=["image", "other"], p_keep=0.0).set_random_state(3)
    out = t({"image": x, "other": x.clone()})
    p = permutation_set()[int(out["perm"])]
    assert out["perm"].dtype == torch.long and int(out["perm"]) > 0
    assert torch.equal(out["target"], x)  # the reconstruction target is the original image
    assert torch.equal(out["image"], shuffle_tiles(x, p))
    assert torch.equal(out["other"], out["image"])
    again = TileShuffled(keys="image")({"image": x, "perm": out["perm"]})
    assert torch.equal(again["image"], out["image"])
    with pytest.raises(ValueError, match="outside the set"):
        TileShuffle()(x, 100)


# ---------------------------------------------------------------------------------------- the loss
def test_sliced_wasserstein_near_zero_for_gaussian_and_large_for_shifted():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 16, generator=g)
    near = sliced_wasserstein(z, 128, generator=torch.Generator().manual_seed(1))
    shifted = sliced_wasserstein(z + 3.0, 128, generator=torch.Generator().manual_seed(1))
    scaled = sliced_wasserstein(z * 3.0, 128, generator=torch.Generator().manual_seed(1))
    assert near < 0.01
    # a shift s along every axis moves each unit projection by s * sum(theta) ~ N(0, s^2): ~9 on average
    assert shifted > 4.0
    assert scaled > 2.0  # (3 - 1)^2 = 4 per projection
    with pytest.raises(ValueError, match="at least 2 latent samples"):
        sliced_wasserstein(torch.randn(1, 16))


def test_tile_ae_loss_terms_on_known_inputs():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    perm = torch.tensor([0, 2])
    image = torch.zeros(2, 1, 4, 4)
    recon = torch.full((2, 1, 4, 4), 0.5)
    latent = torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(0))
    loss = TileAELoss(ce=1.0, l1=1.0, mse=1.0, sw=0.0)
    terms = loss.components({"perm_logits": logits, "recon": recon, "latent": latent}, {"image": image, "perm": perm})
    ce = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["l1"].item() == pytest.approx(0.5)
    assert terms["mse"].item() == pytest.approx(0.25)
    assert terms["sw"].item() == 0.0  # weight 0: not computed
    weighted = TileAELoss(ce=2.0, l1=3.0, mse=4.0, sw=0.0)(
        {"perm_logits": logits, "recon": recon, "latent": latent}, {"image": image, "perm": perm}
    )
    assert weighted.item() == pytest.approx(2 * ce + 3 * 0.5 + 4 * 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        loss({"perm_logits": logits, "recon": recon[:, :, :2], "latent": latent}, {"image": image, "perm": perm})
    with pytest.raises(ValueError, match="must be >= 0"):
        TileAELoss(sw=-1)


# ---------------------------------------------------------------------------------------- the network
@pytest.fixture(scope="module")
def tae():
    torch.manual_seed(0)
    net = TileAutoencoder(num_permutations=100)
    with torch.no_grad():  # the initialisation zeroes the last batch-norm scales (every input looks alike)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()


def test_decoder_rebuilds_the_unshuffled_image_whatever_the_shuffle(tae):
    """Given the applied permutation, the shuffled image decodes exactly as the original does."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    x = torch.stack([xx, yy])[:, None] + 0.1 * torch.rand(2, 1, 96, 96)  # tiles that differ (noise alone pools alike)
    perms = permutation_set()
    shuffled = torch.stack([shuffle_tiles(x[0], perms[7]), shuffle_tiles(x[1], perms[42])])
    with torch.no_grad():
        a = tae(shuffled, torch.tensor([7, 42]))
        b = tae(x, torch.tensor([0, 0]))
    assert a["perm_logits"].shape == (2, 100) and a["latent"].shape == (2, 9, 64)
    assert a["recon"].shape == x.shape and 0 <= a["recon"].min() and a["recon"].max() <= 1  # sigmoid, as the targets
    torch.testing.assert_close(a["recon"], b["recon"])
    # the permutation head sees the tiles in the order shown: its input differs
    assert not torch.allclose(a["perm_logits"], b["perm_logits"])


def test_wrong_input_size_names_the_constraint(tae):
    with pytest.raises(ValueError, match="multiples of 96"):
        tae(torch.rand(1, 1, 100, 96))


def test_reconstruction_network_scripts_and_shares_the_weights(tae):
    rec = TileAutoencoderReconstruction().eval()
    rec.load_state_dict(tae.state_dict(), strict=True)
    x = torch.rand(1, 1, 96, 192)
    with torch.no_grad():
        want = tae(x, torch.tensor([0]))["recon"]
        torch.testing.assert_close(rec(x), want)
        torch.testing.assert_close(torch.jit.script(rec)(x), want)


def test_a_few_steps_learn_the_permutation_and_the_image():
    """Tiny separable task: 4 images, 4 permutations; 20 Adam steps cut the permutation and the image error."""
    torch.manual_seed(0)
    net = TileAutoencoder(
        encoder="efficientnet-lite0", num_permutations=4, latent_channels=16, decoder_channels=(32, 16, 16, 8, 8)
    )
    loss_fn = TileAELoss()
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    images = torch.stack([(xx * 0.8 + 0.1), (yy * 0.8 + 0.1), 1 - xx * 0.8 - 0.1, 1 - yy * 0.8 - 0.1])[:, None]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    perms = permutation_set(4)
    first = last = None
    for _ in range(20):
        index = torch.randint(0, 4, (4,), generator=g)
        shuffled = torch.stack([shuffle_tiles(images[i], perms[int(index[i])]) for i in range(4)])
        out = net(shuffled, index)
        loss = loss_fn(out, {"image": images, "perm": index})
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or dict(loss_fn.terms)
        last = dict(loss_fn.terms)
    assert last["ce"] < 0.5 * first["ce"], (first, last)
    assert last["l1"] < 0.5 * first["l1"], (first, last)


# ---------------------------------------------------------------------------------------- engine parts
def test_prepare_batch_hands_the_index_to_the_network_and_both_targets_to_the_loss():
    batch = {"image": torch.rand(2, 1, 96, 96), "target": torch.rand(2, 1, 96, 96), "perm": torch.tensor([3, 0])}
    image, target, args, kwargs = TileAEPrepareBatch()(batch, torch.device("cpu"))
    assert image is not None and args == ()
    assert torch.equal(kwargs["perm"], torch.tensor([3, 0])) and torch.equal(target["perm"], kwargs["perm"])
    assert torch.equal(target["image"], batch["target"])
    with pytest.raises(KeyError, match="RandTileShuffled"):
        TileAEPrepareBatch()({"image": batch["image"]})
    decollated = [
        {
            "pred": {"recon": torch.ones(1, 2, 2), "perm_logits": torch.tensor([0.0, 1.0])},
            "label": {"image": torch.zeros(1, 2, 2), "perm": torch.tensor(1)},
        }
    ] * 2
    logits, perm = tile_ae_outputs("perm_logits", "perm", stack=True)(decollated)
    assert logits.shape == (2, 2) and perm.tolist() == [1, 1]
    recon, image = tile_ae_outputs()(decollated)
    assert len(recon) == 2 and recon[0].shape == (1, 2, 2)


# ---------------------------------------------------------------------------------------- hand-over
@pytest.mark.parametrize("wrapped", [False, True])
def test_encoder_from_a_tile_ae_checkpoint_has_equal_weights_in_the_segmentation_net(tmp_path, wrapped):
    torch.manual_seed(1)
    tae = TileAutoencoder()
    with torch.no_grad():  # make every encoder tensor distinct from a fresh init
        for p in tae.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = tae.state_dict()
    path = tmp_path / "tae.pt"
    torch.save({"model": state} if wrapped else state, path)  # CheckpointSaver's layout or a bare state dict
    seg = AuxReconSegNet(3, weights=str(path), reconstruction=True)
    assert seg.encoder_init.startswith(f"file:{path}") and "'encoder.'" in seg.encoder_init
    enc = seg.encoder.state_dict()
    assert enc.keys() == tae.encoder.state_dict().keys()
    for key, value in tae.encoder.state_dict().items():
        assert torch.equal(enc[key], value), key
    scratch = AuxReconSegNet(3)
    assert scratch.encoder_init == "scratch"
    assert not torch.equal(scratch.encoder.state_dict()[next(iter(enc))], enc[next(iter(enc))])


def test_a_file_that_is_no_encoder_is_refused_naming_it(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=str(path)):
        AuxReconSegNet(3, weights=str(path))
    with pytest.raises(ValueError, match="weights_path"):
        AuxReconSegNet(3, weights="bundle:xray_tile_ae_pretraining")


def test_segmentation_net_from_imagenet_loads_the_packaged_lite0_weights():
    seg = AuxReconSegNet(2, weights="imagenet")
    assert seg.encoder_init == "imagenet:efficientnet-lite0"
    # the stem of the packaged weights summed over RGB for the gray input: not an initialiser's output
    key = next(k for k, v in seg.encoder.state_dict().items() if k.endswith("weight") and v.ndim == 4)
    fresh = AuxReconSegNet(2).encoder.state_dict()[key]
    assert F.cosine_similarity(seg.encoder.state_dict()[key].flatten(), fresh.flatten(), dim=0) < 0.5


def test_content_seeded_shuffle_is_fixed_per_film_whatever_the_random_state():
    """content_seed: the draw depends on the film's pixels and the seed only (a fixed validation set)."""
    from mimtl.transforms import RandTileShuffled

    films = [torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(12)]

    def draws(transform, state):
        transform.set_random_state(state)
        return [int(transform({"image": f})["perm"]) for f in films]

    fixed = RandTileShuffled(keys="image", p_keep=0.3, num_permutations=10, content_seed=0)
    first = draws(fixed, 1)
    assert draws(fixed, 2) == first
    reverse = [int(fixed({"image": f})["perm"]) for f in reversed(films)]  # order of the films does not matter
    assert reverse[::-1] == first
    assert len(set(first)) > 2  # still a spread of permutations over films
    other_seed = RandTileShuffled(keys="image", p_keep=0.3, num_permutations=10, content_seed=1)
    assert draws(other_seed, 1) != first
    free = RandTileShuffled(keys="image", p_keep=0.3, num_permutations=10)
    assert draws(free, 1) != draws(free, 2)  # without it, the transform's random state decides
