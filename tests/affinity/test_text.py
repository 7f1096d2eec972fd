"""Text affinity: name cleaning, both backends, quality on the benchmark and on real names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cat_models.affinity import AffinityError, AffinityInputs, estimate_affinity, text_affinity
from cat_models.affinity.text import prompt_name
from cat_models.affinity.text_backends import (
    OpenClipEncoder,
    SentenceEncoder,
    default_sentence_model_path,
)
from cat_models.data import packaged_class_names
from cat_models.data.synthetic import GROUND_TRUTH, SOURCE_CLASSES, TARGET_CLASSES
from cat_models.errors import CheckpointError

CITYSCAPES_TO_ADE = {
    "road": {"road"}, "sidewalk": {"sidewalk"}, "building": {"building"}, "wall": {"wall"},
    "fence": {"fence"}, "pole": {"pole"}, "traffic light": {"traffic light"},
    "vegetation": {"tree", "plant"}, "terrain": {"grass", "earth"}, "sky": {"sky"},
    "person": {"person"}, "rider": {"person"}, "car": {"car"}, "truck": {"truck"},
    "bus": {"bus"}, "bicycle": {"bicycle"},
}


def test_prompt_name_cleans_coco_and_synonyms():
    assert prompt_name("sky-other") == ["sky"]
    assert prompt_name("wall-brick") == ["brick wall"]
    assert prompt_name("desk-stuff") == ["desk"]
    assert prompt_name("car, auto, automobile") == ["car", "auto", "automobile"]
    assert prompt_name("traffic_light") == ["traffic light"]
    with pytest.raises(AffinityError, match="empty after cleaning"):
        prompt_name(" , ")


def test_packaged_class_lists():
    ade, coco, city = (packaged_class_names(d) for d in ("ade20k", "coco_stuff", "cityscapes"))
    assert (len(ade), len(coco), len(city)) == (150, 182, 33)
    assert (ade[0], ade[2], ade[12], ade[149]) == ("wall", "sky", "person", "flag")
    # COCO-Stuff id i -> label i + 1: id 0 person, 9 traffic light, 91 banner, 181 wood
    assert (coco[0], coco[9], coco[91], coco[181]) == ("person", "traffic light", "banner", "wood")
    # Cityscapes labelIds 7 road, 26 car, 33 bicycle
    assert (city[7 - 1], city[26 - 1], city[33 - 1]) == ("road", "car", "bicycle")


def test_sentence_backend_on_benchmark_names(top1_accuracy):
    a = text_affinity(SOURCE_CLASSES, TARGET_CLASSES)
    assert a.shape == (12, 10) and a.method == "text"
    np.testing.assert_allclose(a.values.sum(0), 1.0)
    assert a.provenance["backend"] == "sentence:all-MiniLM-L6-v2"
    assert top1_accuracy(a, GROUND_TRUTH) >= 0.8
    # the registry path gives the same matrix
    b = estimate_affinity("text", AffinityInputs(source_names=SOURCE_CLASSES,
                                                 target_names=TARGET_CLASSES))
    np.testing.assert_array_equal(a.values, b.values)


def test_cityscapes_to_ade20k_pairs_land_top1():
    ade, city = packaged_class_names("ade20k"), packaged_class_names("cityscapes")
    a = text_affinity(ade, city)
    best = {t: ade[int(i)] for t, i in zip(city, a.argmax_source())}
    hits = [t for t, ok in CITYSCAPES_TO_ADE.items() if best[t] in ok]
    assert len(hits) >= 12, {t: best[t] for t in CITYSCAPES_TO_ADE}


def test_default_centring_sharpens_the_papers_near_uniform_columns():
    """MiniLM's cosines are all positive and close: clipped (the paper) the columns stay
    near uniform; centred (the default) the top source class dominates, same argmax."""
    paper = text_affinity(SOURCE_CLASSES, TARGET_CLASSES, nonnegativity="clip")
    default = text_affinity(SOURCE_CLASSES, TARGET_CLASSES)
    assert default.provenance["nonnegativity"] == "center"
    assert paper.provenance["cosine_min"] > 0   # nothing for clipping to remove
    assert paper.values.max(0).mean() < 0.2
    assert default.values.max(0).mean() > 0.5
    np.testing.assert_array_equal(paper.argmax_source(), default.argmax_source())
    np.testing.assert_allclose(default.values.sum(0), 1.0)


def test_temperature_sharpens_text_columns():
    flat = text_affinity(SOURCE_CLASSES, TARGET_CLASSES, nonnegativity="clip")
    sharp = text_affinity(SOURCE_CLASSES, TARGET_CLASSES, temperature=0.05, top_k=3)
    np.testing.assert_array_equal(flat.argmax_source(), sharp.argmax_source())
    assert sharp.values.max(0).min() > flat.values.max(0).max()
    assert ((sharp.values > 0).sum(0) == 3).all()


def test_fast_sentence_path_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["a photo of a lawn.", "a photo of a street.", "sky"]
    ours = SentenceEncoder().encode(texts)
    reference = SentenceTransformer(str(default_sentence_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.fixture
def tiny_open_clip(tmp_path):
    """A 1-layer open_clip model with random weights, saved as a local weights file."""
    import open_clip

    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                             "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                           "layers": 1}}
    (tmp_path / "cat-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "cat-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("cat-tiny-clip", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    return model, tmp_path / "tiny.pt"


def test_open_clip_backend_with_local_weights(tiny_open_clip):
    import open_clip

    model, weights = tiny_open_clip
    a = text_affinity(["sky", "grass"], ["sea", "lawn", "street"], backend="open_clip",
                      clip_model="cat-tiny-clip", clip_pretrained=weights,
                      templates=["a photo of a {}."], temperature=0.1)
    assert a.provenance["backend"] == "open_clip:cat-tiny-clip:tiny.pt"
    tokens = open_clip.get_tokenizer("cat-tiny-clip")(
        [f"a photo of a {n}." for n in ["sky", "grass", "sea", "lawn", "street"]])
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model.encode_text(tokens).double(), dim=-1).numpy()
    cosine = emb[:2] @ emb[2:].T
    expected = np.exp(cosine / 0.1) / np.exp(cosine / 0.1).sum(0)
    np.testing.assert_allclose(a.values, expected, atol=1e-6)


def test_open_clip_weights_of_another_model_name_the_tensors(tiny_open_clip, tmp_path):
    """Today open_clip's strict load raises torch's `size mismatch`; now file, model, tensors."""
    import open_clip

    _, weights = tiny_open_clip
    config = json.loads((weights.parent / "cat-tiny-clip.json").read_text())
    config["text_cfg"]["width"] = 64
    (tmp_path / "cat-tiny-clip-wide.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "cat-tiny-clip-wide.json")
    with pytest.raises(CheckpointError) as err:
        OpenClipEncoder("cat-tiny-clip-wide", pretrained=weights)
    msg = str(err.value)
    assert msg.startswith(f"{weights}: does not match open_clip model 'cat-tiny-clip-wide': ")
    narrow = torch.load(weights, weights_only=True)
    wide = open_clip.create_model("cat-tiny-clip-wide", pretrained=None).state_dict()
    n_diff = sum(1 for k, v in wide.items() if v.shape != narrow[k].shape)
    assert f"{n_diff} tensor(s) of another shape (positional_embedding: checkpoint [77, 32] " \
           "vs model [77, 64]; " in msg
    cut = tmp_path / "cut.pt"
    cut.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"cut.pt: open_clip weights is truncated or "
                                              r"damaged"):
        OpenClipEncoder("cat-tiny-clip", pretrained=cut)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"noise.pt: open_clip weights is not a torch "
                                              r"checkpoint \(starts with bytes 00 01 02 03"):
        OpenClipEncoder("cat-tiny-clip", pretrained=noise)


def test_open_clip_backend_errors_name_the_problem(tmp_path):
    with pytest.raises(AffinityError, match="missing.pt not found"):
        text_affinity(["a"], ["b"], backend="open_clip", clip_model="ViT-B-32",
                      clip_pretrained=tmp_path / "missing.pt")
    with pytest.raises(AffinityError, match="pretrained= is required"):
        text_affinity(["a"], ["b"], backend="open_clip")
    with pytest.raises(AffinityError, match="unknown text backend 'bert'"):
        text_affinity(["a"], ["b"], backend="bert")
    with pytest.raises(AffinityError, match="must contain"):
        text_affinity(["a"], ["b"], templates=["a photo"])
