"""What CAT-PITI changes in a source model (paper §3.3): A before the encoder, prompts, a
re-initialised first layer, an encoder on a generic decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.affinity.matrix import AffinityMatrix
from cat_models.piti import PitiModel, cat_model, empty_mask, label_mask, training_free_model
from cat_models.piti.encoder import AffinityLayer
from cat_models.piti.transfer import (
    from_generic,
    random_values,
    reinit_mask_input,
    with_prompts,
)
from tests.piti.tiny_models import NUM_CLASSES, random_labels, tiny_model

CT = 3


def inputs(batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=gen), torch.tensor([20, 700][:batch])


def test_affinity_layer_is_block_diagonal():
    a = torch.tensor([[0.5, 0.0], [0.5, 0.25], [0.0, 0.75]])
    layer = AffinityLayer(a)
    assert layer.weight.shape == (4, 3)
    mask = label_mask(torch.tensor([[[0, 1, 2]]]), 2)
    mask[0, 2, 0, 0] = 1.0                      # the first pixel is the empty mask
    out = layer(mask)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0, 1]         # empty -> empty
    assert out[0, :, 0, 1].tolist() == [0.5, 0.5, 0.0, 0]   # class 1 -> column 1 of A
    assert out[0, :, 0, 2].tolist() == [0.0, 0.25, 0.75, 0]
    assert layer(label_mask(torch.tensor([[[0]]]), 2)).abs().sum() == 0   # unlabeled


def test_identity_affinity_without_prompts_is_the_source_model():
    source = tiny_model(seed=1)
    model = cat_model(source, NUM_CLASSES, np.eye(NUM_CLASSES))
    assert model.config.num_classes == NUM_CLASSES and model.config.source_classes == NUM_CLASSES
    x, t = inputs()
    for mask in (label_mask(random_labels(2, 16, seed=2), NUM_CLASSES),
                 empty_mask(2, NUM_CLASSES, 16, 16)):
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, mask), source(x, t, mask))


def test_training_free_permutation_reads_the_matching_source_classes():
    source = tiny_model(seed=1)
    perm = np.array([4, 0, 2])              # target class k+1 is source class perm[k]+1
    values = np.zeros((NUM_CLASSES, CT))
    values[perm, np.arange(CT)] = 1.0
    matrix = AffinityMatrix(values, tuple(f"s{i}" for i in range(NUM_CLASSES)),
                            tuple(f"t{i}" for i in range(CT)), "test")
    model = training_free_model(source, matrix)
    assert not model.training and model.config.num_classes == CT
    target = random_labels(2, 16, num_classes=CT, seed=3)
    lut = torch.tensor([0, *(perm + 1)])
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, label_mask(target, CT)),
                                   source(x, t, label_mask(lut[target], NUM_CLASSES)))
        torch.testing.assert_close(model(x, t, empty_mask(2, CT, 16, 16)),
                                   source(x, t, empty_mask(2, NUM_CLASSES, 16, 16)))


def test_random_affinity_is_seeded_with_unit_columns():
    a, b, c = random_values(5, 3, seed=1), random_values(5, 3, seed=1), random_values(5, 3, 2)
    np.testing.assert_allclose(a.sum(axis=0), 1.0)
    assert (a >= 0).all() and np.array_equal(a, b) and not np.array_equal(a, c)
    model = cat_model(tiny_model(), CT, None, seed=1)
    np.testing.assert_allclose(model.encoder.affinity.weight[:NUM_CLASSES, :CT].detach(), a,
                               rtol=1e-6)


def test_prompts_change_the_output_and_are_the_only_new_parameters_besides_a():
    source = tiny_model(seed=1)
    plain = cat_model(source, CT, random_values(NUM_CLASSES, CT))
    prompted = with_prompts(plain, 4, seed=3)
    new = set(dict(prompted.named_parameters())) - set(dict(source.named_parameters()))
    assert new == {"encoder.affinity.weight", "encoder.prompts"}
    assert prompted.config.prompt_count == 4 and prompted.encoder.prompts.shape == (2, 4, 16)
    mask = label_mask(random_labels(2, 16, num_classes=CT), CT)
    x, t = inputs()
    with torch.no_grad():
        assert (prompted(x, t, mask) - plain(x, t, mask)).abs().max() > 1e-4
        assert (prompted.encoder(mask)[0] - plain.encoder(mask)[0]).abs().max() > 1e-3


def test_reinit_first_layer_reads_the_target_one_hot():
    source = tiny_model(seed=1)
    model = reinit_mask_input(source, CT, seed=0)
    conv1 = model.encoder.cnn.conv1
    assert conv1.in_channels == CT + 2 and model.encoder.affinity is None
    assert model.config.num_classes == CT and model.config.source_classes is None
    src, new = source.state_dict(), model.state_dict()
    assert all(torch.equal(src[k], new[k]) for k in src if not k.startswith("encoder.cnn.conv1"))
    again = reinit_mask_input(source, CT, seed=0).encoder.cnn.conv1.weight
    assert torch.equal(conv1.weight, again)
    with torch.no_grad():
        out = model(*inputs(), label_mask(random_labels(2, 16, num_classes=CT), CT))
    assert out.shape == (2, 6, 16, 16)


def test_generic_decoder_gets_a_fresh_encoder():
    generic = tiny_model(seed=7)
    model = from_generic(generic, CT, seed=0)
    gd, md = generic.decoder.state_dict(), model.decoder.state_dict()
    assert all(torch.equal(gd[k], md[k]) for k in gd)
    assert not torch.equal(model.encoder.positional_embedding, generic.encoder.positional_embedding)
    assert model.encoder.cnn.conv1.in_channels == CT + 2 and model.config.num_classes == CT


def test_sources_are_not_modified_and_plans_rebuild_from_their_config():
    source = tiny_model(seed=1)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    models = [cat_model(source, CT, None), with_prompts(cat_model(source, CT, None), 2),
              reinit_mask_input(source, CT), from_generic(source, CT)]
    after = source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and len(after) == len(before)
    assert source.config.num_classes == NUM_CLASSES and source.encoder.affinity is None
    for model in models:
        rebuilt = PitiModel(model.config)
        rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_bad_affinity_and_sources_are_clear_errors():
    source = tiny_model()
    with pytest.raises(ValueError, match=r"expected shape \(5, 3\)"):
        cat_model(source, CT, np.ones((4, 3)) / 4)
    with pytest.raises(ValueError, match="already carries an affinity layer"):
        cat_model(cat_model(source, CT, None), 2, None)
    with pytest.raises(ValueError, match="reads RGB masks"):
        cat_model(tiny_model(rgb_input=True), CT, None)
