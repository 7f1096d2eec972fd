"""The combination's tie-break scores (harness.stages_affinity.few_shot_scores): each matrix's
training-free FID / mIoU on the few-shot set alone, ranked by FID."""

from __future__ import annotations

import pytest
import torch

from harness.stages_affinity import few_shot_scores, fid_ranking
from tests.metrics.test_evaluator import PaletteDataset, PaletteSegmenter, paint


def test_scores_read_the_few_shot_set_only_and_rank_by_fid(feature_net, tmp_path):
    labels = torch.randint(1, 5, (6, 16, 16), generator=torch.Generator().manual_seed(0))
    subset = PaletteDataset(labels, tmp_path, split="train")
    seen = []

    def sample(kind: str, maps: torch.Tensor) -> torch.Tensor:
        seen.append(maps.clone())
        if kind == "exact":
            return paint(maps)
        noise = torch.randn(maps.shape[0], 3, *maps.shape[-2:],
                            generator=torch.Generator().manual_seed(1))
        if kind == "noisy":
            return (paint(maps) + 0.4 * noise).clamp(-1, 1)
        return torch.zeros(maps.shape[0], 3, *maps.shape[-2:])      # "flat": no content

    scores = few_shot_scores(subset, PaletteSegmenter(),
                             {"flat": "flat", "noisy": "noisy", "exact": "exact"},
                             make_generator=lambda matrix: matrix, sample=sample,
                             feature_net=feature_net, cache_dir=tmp_path)
    # every generator was asked for the few-shot set's own label maps, nothing else
    # (6 label maps: one batch per matrix)
    assert len(seen) == 3 and all(torch.equal(maps, labels) for maps in seen)
    assert scores["exact"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert scores["exact"]["miou"] == 1.0 and scores["flat"]["miou"] < 0.5
    assert fid_ranking(scores) == ["exact", "noisy", "flat"]
