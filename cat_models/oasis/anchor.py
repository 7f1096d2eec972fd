"""Absent-class anchor: a guard, beyond the paper, for the target classes a few-shot set never
shows.

Why. CAT's training-free generator draws every target class through its source counterpart
(the column of A), including classes the few-shot images never show. Finetuning has no data
for those classes, yet it moves the shared weights and A, and measured on the embedded
benchmark (`benchmarks/RESULTS_fidelity.md`, "classes the few-shot set shows once, or never")
two things take about half of CAT's start on them within 1,800 iterations:
- *drift*: nothing holds the code of an unseen class where the source put it (sea, mapped to
  water, falls from IoU 0.96 to 0.20-0.45);
- *aliasing*: where the vote maps an unseen class and a shown one to the same source class,
  training teaches that source code to draw the shown class, and the unseen one follows it
  (beach and lava both on sand: beach is drawn as lava).

What. At each generator step every label map of the batch gets a *probe* copy in which one
class it shows (drawn at random) is relabelled as one of the absent classes (drawn at
random). Generator and the frozen training-free CAT generator (the plan's generator as built,
before any step) draw the probes with the same noise, and the generator pays `weight` times
the mean (Huber) distance of the two images over the relabelled pixels. So the absent
classes keep the look they had at the start, in the contexts the set provides, while the
classes the set shows train as before. Aliasing can be undone because CAT's generator reads the
target label map itself twice beyond A's shared source code: through A's own column of the
class (trainable) and through the residual branches of every SPADE block.

How it runs. The probes go through the generator in one batch with the training label maps
(so DDP sees one forward per backward, and batch-norm statistics span both halves; the frozen
copy draws the same stacked batch, so the loss is exactly 0 before the first update). The
draws come from the step's seeded generator for the global batch, after everything else the
step draws, so a run without absent classes (or with weight 0) is the paper's recipe bit for
bit. The mean is over the global batch's relabelled pixels (their count is summed over DDP
ranks). The absent classes are read from the training set once (`fit`), before the first step.
With `max_images` k > 0 the same guard covers the classes at most k images show (k >= the
set's size: every class); a probe then never relabels a class as itself.
Because maps and probes share one forward, G's batch-norm statistics (and the EMA's, copied
from G) span both. Checkpoints keep the frozen copy's buffers (`state_dict`), so a resumed
run repeats the next step exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cat_models.data.batching import read_items
from cat_models.oasis.norms import clone_module

Reduce = Callable[[torch.Tensor], torch.Tensor]

# The anchor's pixel distance is Huber's: |d| - beta/2 above beta (images span [-1, 1]), d²/2beta
# below. A plain |d| has a gradient of ±1 at the tiny gaps of the first steps, where float noise
# (another summation order under DDP, another machine) picks the sign; Huber's is ~0 there.
HUBER_BETA = 0.05


def images_showing(data: Sequence[dict], num_classes: int) -> np.ndarray:
    """Int [num_classes + 1]: how many items of `data` show each label value (0 = unlabeled).

    A `SegmentationDataset` is read without augmentation (`label_histograms`); any other
    sequence of {"label": [H, W]} items as it returns them."""
    if hasattr(data, "labels_at"):
        from cat_models.data.dataset import label_histograms

        return (label_histograms(data)[:, : num_classes + 1] > 0).sum(axis=0)
    # as the training loop reads them (seeded, in a fork of torch's RNG)
    n = len(data)
    _, labels = read_items(data, torch.arange(n), torch.zeros(n, dtype=torch.long))
    shows = np.zeros(num_classes + 1, dtype=np.int64)
    for item in labels:
        values = torch.unique(item)
        values = values[(values >= 0) & (values <= num_classes)]
        shows[values.numpy()] += 1
    return shows


def present_classes(data: Sequence[dict], num_classes: int) -> np.ndarray:
    """Bool [num_classes + 1]: which label values (0 = unlabeled) any item of `data` shows."""
    return images_showing(data, num_classes) > 0


class AbsentClassAnchor:
    """Holds the frozen start generator, the anchored label values and the weight."""

    def __init__(self, generator: nn.Module, weight: float, max_images: int = 0) -> None:
        if weight < 0:
            raise ValueError(f"anchor_absent: the weight must be >= 0, got {weight}")
        if max_images < 0:
            raise ValueError(f"anchor_max_images: must be >= 0, got {max_images}")
        self.weight = float(weight)
        self.max_images = int(max_images)
        # Train mode, as the generator it is compared with (batch statistics). Its weights
        # never change, but spectral norm's power iteration updates its u / v buffers at
        # each forward: checkpoints carry them (`state_dict`), so a resume is exact.
        self.start: nn.Module | None = clone_module(generator).train().requires_grad_(False)
        self.classes: list[int] = []

    def fit(self, data: Sequence[dict], num_classes: int) -> list[int]:
        """Find the target label values (1..num_classes) that at most `max_images` items of
        `data` show (0: the classes it never shows); with none, the frozen copy is dropped
        (nothing will draw it)."""
        shows = images_showing(data, num_classes)
        self.classes = [int(c) for c in np.flatnonzero(shows[1:] <= self.max_images) + 1]
        if not self.active:
            self.start = None
        return self.classes

    @property
    def active(self) -> bool:
        return self.weight > 0 and bool(self.classes) and self.start is not None

    def to(self, device: torch.device, memory_format: torch.memory_format) -> None:
        if self.start is not None:
            self.start.to(device, memory_format=memory_format)

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.start is None else self.start.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        if state is not None and self.start is not None:
            self.start.load_state_dict(state)

    def draw(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """[batch, 2] uniforms in [0, 1): which shown class, which anchored class, per map."""
        return torch.rand(batch, 2, generator=gen)

    def probe(self, labels: torch.Tensor, draws: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(probe one-hot [B, C+1, H, W], mask [B, 1, H, W] of the relabelled pixels).

        Map i relabels its shown class number floor(u0 · n_shown) (in label order, unlabeled
        excluded) as anchored class number floor(u1 · n) of the n anchored classes other than
        itself (a class anchored while shown, `max_images` > 0, is never relabelled as
        itself). A map that shows no class, or whose class has no other anchored class, is
        left as it is, with an empty mask."""
        probe = labels.clone()
        mask = torch.zeros_like(labels[:, :1])
        shown = labels[:, 1:].flatten(2).amax(dim=2) > 0          # [B, C]
        for i in range(labels.shape[0]):
            classes = torch.nonzero(shown[i]).flatten() + 1
            if len(classes) == 0:
                continue
            src = int(classes[min(int(draws[i, 0] * len(classes)), len(classes) - 1)])
            targets = [c for c in self.classes if c != src]
            if not targets:
                continue
            dst = targets[min(int(draws[i, 1] * len(targets)), len(targets) - 1)]
            region = labels[i, src] > 0
            probe[i, src][region] = 0.0
            probe[i, dst][region] = 1.0
            mask[i, 0] = region.to(mask.dtype)
        return probe, mask

    def loss(self, drawn: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor,
             world_size: int = 1, reduce: Reduce | None = None
             ) -> tuple[torch.Tensor, float]:
        """(this rank's term, its value for the report). The term is this rank's share of the
        mean Huber distance (`HUBER_BETA`) of `drawn` to `reference` over the masked pixels of
        the global batch: DDP's gradient average then gives the global mean, which is the
        reported value. One all-reduce carries the pixel count and the sum."""
        gap = F.smooth_l1_loss(drawn.float(), reference.float(), reduction="none",
                               beta=HUBER_BETA)
        total = (gap * mask).sum()
        sums = torch.stack([mask.sum() * drawn.shape[1], total.detach()])
        if reduce is not None:
            sums = reduce(sums)
        pixels = sums[0].clamp_min(1.0)
        return total * world_size / pixels, float(sums[1] / pixels)
