"""Feature affinity (paper §3.1, Eq. 2): pixel-weighted prototypes, backends, benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cat_models.affinity import AffinityError, class_prototypes, feature_affinity
from cat_models.affinity.feature_backends import InceptionPatchFeatures, TimmPatchFeatures
from cat_models.affinity.features import patch_class_weights, prototype_cosine
from cat_models.errors import CheckpointError


class PooledColour:
    """Patch features = mean colour of each 2×2 patch (a transparent stand-in extractor)."""

    name = "pooled-colour"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 2)


def test_patch_weights_are_pixel_fractions():
    label = torch.tensor([[[1, 1, 2, 2], [1, 0, 2, 2], [3, 3, 3, 3], [3, 3, 1, 3]]])
    w = patch_class_weights(label, 3, (2, 2))
    assert w.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(w[0, 0].numpy(), [[0.75, 0.0], [0.0, 0.25]])  # class 1
    np.testing.assert_allclose(w[0, 1].numpy(), [[0.0, 1.0], [0.0, 0.0]])  # class 2
    np.testing.assert_allclose(w[0, 2].numpy(), [[0.0, 0.0], [1.0, 0.75]])  # class 3


def test_prototypes_match_a_direct_loop(tensor_dataset):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 4, 4, generator=g) * 2 - 1
    labels = torch.randint(0, 4, (3, 4, 4), generator=g)
    labels[:, 0, 0] = 3  # make sure every class occurs except class 2 in image 0
    ds = tensor_dataset(images, labels, ["a", "b", "c"])
    protos, weight = class_prototypes(PooledColour(), ds, batch_size=2)
    # paper §3.1: average of patch features weighted by the class's pixels in each patch
    feats = F.avg_pool2d(images, 2).double()
    num, den = np.zeros((3, 3)), np.zeros(3)
    for b in range(3):
        for i in range(2):
            for j in range(2):
                patch = labels[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                for k in (1, 2, 3):
                    n = int((patch == k).sum())
                    num[k - 1] += n * feats[b, :, i, j].numpy()
                    den[k - 1] += n
    np.testing.assert_allclose(protos, num / den[:, None], atol=1e-12)
    np.testing.assert_allclose(weight, den / 4)


def test_feature_affinity_matches_colours(tensor_dataset):
    colours = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}

    def scene(order: list[str]):
        img, lab = torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
        for k, name in enumerate(order):
            img[0, :, :, k:k + 1] = torch.tensor(colours[name]).view(3, 1, 1) * 0.9
            lab[0, :, k] = k + 1
        return img, lab

    src_img, src_lab = scene(["red", "green", "blue"])
    tgt_img, tgt_lab = scene(["blue", "red"])
    source = tensor_dataset(src_img, src_lab, ["red", "green", "blue"])
    target = tensor_dataset(tgt_img, tgt_lab, ["navy", "crimson", "absent"])
    # identity extractor: 1-pixel "patches" whose feature is the colour
    extractor_obj = type("Identity", (), {"name": "identity", "__call__": lambda self, x: x})()
    a = feature_affinity(source, target, extractor=extractor_obj)
    assert [a.source_names[i] for i in a.argmax_source()[:2]] == ["blue", "red"]
    np.testing.assert_allclose(a.values.sum(0), 1.0)
    assert a.provenance["absent_target_classes"] == ["absent"]
    np.testing.assert_allclose(a.values[:, 2], 1 / 3)
    # centring removes the shared component: only the matching class stays positive
    np.testing.assert_allclose(a.values[:, 0], [0.0, 0.0, 1.0], atol=1e-12)
    plain = feature_affinity(source, target, extractor=extractor_obj, center=False)
    assert plain.values[:, 0].min() == 0.0 and plain.provenance["center"] is False


def test_prototype_cosine_zeroes_absent_pairs():
    s = np.array([[1.0, 0.0], [0.0, 0.0]])
    t = np.array([[1.0, 1.0]])
    cos = prototype_cosine(s, t, np.array([True, False]), np.array([True]), center=False)
    np.testing.assert_allclose(cos, [[np.sqrt(0.5)], [0.0]])


def test_timm_vit_from_dino_style_checkpoint(tmp_path):
    import timm

    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0,
                            **kwargs).eval()
    # DINO/iBOT release format: weights nested under "teacher" with a "backbone." prefix
    nested = {"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}
    torch.save(nested, tmp_path / "ibot.pth")
    extractor = TimmPatchFeatures("vit_tiny_patch16_224", tmp_path / "ibot.pth", **kwargs)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    maps = extractor(images)
    assert maps.shape == (2, 32, 4, 4)
    x = F.interpolate((images + 1) / 2, size=(32, 32), mode="bilinear", align_corners=False)
    mean, std = vit.pretrained_cfg["mean"], vit.pretrained_cfg["std"]  # timm's own config
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = vit.forward_features(x)[:, 1:]
    torch.testing.assert_close(maps[:, :, 1, 2], tokens[:, 1 * 4 + 2])
    partial = {k: v for k, v in vit.state_dict().items() if not k.startswith("blocks")}
    torch.save(partial, tmp_path / "partial.pt")
    n_blocks = sum(1 for k in vit.state_dict() if k.startswith("blocks"))
    with pytest.raises(CheckpointError, match=rf"partial.pt: does not match timm model "
                                              rf"'vit_tiny_patch16_224' \(embed_dim 32, depth 1, "
                                              rf"patch \(8, 8\)\): {n_blocks} missing from the "
                                              rf"checkpoint \(blocks.0.norm1.weight, "):
        TimmPatchFeatures("vit_tiny_patch16_224", tmp_path / "partial.pt", **kwargs)
    with pytest.raises(AffinityError, match="checkpoint= a local weights file is required"):
        TimmPatchFeatures("vit_tiny_patch16_224", None, **kwargs)


def test_timm_checkpoint_of_another_config_names_the_tensors(tmp_path):
    """Today a raw torch `size mismatch` RuntimeError; now the file, model and tensors."""
    import timm

    small = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **small)
    torch.save(vit.state_dict(), tmp_path / "small.pth")
    wide = small | {"embed_dim": 48, "depth": 1}   # wider and shallower than the file
    with pytest.raises(CheckpointError) as err:
        TimmPatchFeatures("vit_tiny_patch16_224", tmp_path / "small.pth", **wide)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'small.pth'}: does not match timm model "
                          "'vit_tiny_patch16_224' (embed_dim 48, depth 1, patch (8, 8)): ")
    assert "cls_token: checkpoint [1, 1, 32] vs model [1, 1, 48]" in msg
    n_block1 = sum(1 for k in vit.state_dict() if k.startswith("blocks.1."))
    assert f"{n_block1} unexpected (blocks.1." in msg   # the file's second block
    # a classifier head in the file is allowed: the patch-feature model has none
    assert "head" not in msg
    (tmp_path / "cut.pth").write_bytes((tmp_path / "small.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cut.pth: timm checkpoint is truncated or "
                                              r"damaged"):
        TimmPatchFeatures("vit_tiny_patch16_224", tmp_path / "cut.pth", **small)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list.pth: timm checkpoint holds a list, "
                                              r"expected a state dict"):
        TimmPatchFeatures("vit_tiny_patch16_224", tmp_path / "list.pth", **small)


def test_inception_backend_gives_spatial_maps():
    ex = InceptionPatchFeatures(layer="mixed_2", input_size=64)
    maps = ex(torch.zeros(1, 3, 32, 32))
    assert maps.shape == (1, 288, 5, 5) and (maps >= 0).all()  # post-ReLU features
    assert InceptionPatchFeatures(layer="mixed_7").name.endswith("mixed_7@128")
    with pytest.raises(AffinityError, match="layer 'pool3' not one of"):
        InceptionPatchFeatures(layer="pool3")
