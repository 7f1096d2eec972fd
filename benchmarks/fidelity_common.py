"""What the fidelity benchmarks share: the harness cache's stage files, the few-shot set, the
evaluator (with the real-data floor) and the training-free score (issue #13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fidelity_readings import class_texture, texture

RESOLUTION = 32


def _matches(folder: Path, ref_name: str | None, seed: int | None,
             iterations: int | None = None) -> bool:
    """Whether the stage folder's recorded inputs (STAGE.json) name this dataset / seed /
    number of training iterations."""
    try:
        inputs = json.loads((folder / "STAGE.json").read_text()).get("inputs", {})
    except (OSError, ValueError):
        return False
    if ref_name is not None and (inputs.get("ref") or {}).get("name") != ref_name:
        return False
    if iterations is not None and inputs.get("iterations") != iterations:
        return False
    return seed is None or inputs.get("seed") == seed


def find_one(cache: Path, stage: str, name: str, ref_name: str | None = None,
             seed: int | None = None, iterations: int | None = None) -> Path:
    """`<cache>/stages/<stage>/*/<name>` built from dataset `ref_name` with `seed` and
    `iterations` (when given; a cache shared by several studies holds several); the newest of
    those left."""
    found = sorted((p for p in (cache / "stages" / stage).glob(f"*/{name}")
                    if _matches(p.parent, ref_name, seed, iterations)),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{cache}/stages/{stage}: no {name}; run studies/training_free.yaml "
                         f"with CAT_HARNESS_CACHE={cache} first")
    if len(found) > 1:
        print(f"[warn] {stage}: {len(found)} candidates, using the newest")
    return found[-1]


SOURCE_KIND = "synthetic_source"
TARGET_KIND = "synthetic_target"   # the embedded target, the fidelity scripts' default


def target_root(cache: Path, kind: str = TARGET_KIND) -> Path:
    """The dataset's root; `SOURCE_KIND` names the source domain itself (the control runs
    that finetune the source model on source images, identity A)."""
    stage = "dataset-source" if kind == SOURCE_KIND else "dataset-target"
    stage = json.loads(find_one(cache, stage, "STAGE.json", kind).read_text())
    return Path(stage["inputs"]["ref"]["root"])


def stored_ranking(folder: Path) -> list[str] | None:
    """The tie-break order a stored combination was voted with: the `fid_ranking` of the
    provenance `AffinityMatrix.save` wrote beside it (None: no combination there)."""
    meta = folder / "combination.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("provenance", {}).get("fid_ranking")


class Bench:
    """Source model, target splits, few-shot set and evaluator from a harness cache."""

    subset_tag = ""   # "-rare<k>-<classes>" for a --rare set: its stored affinities' folder

    def __init__(self, cache: Path, size: int, seed: int, n_samples: int = 64,
                 target_kind: str = TARGET_KIND, source_seed: int = 0,
                 source_iterations: int | None = None,
                 rare: tuple[list[str], int] | None = None) -> None:
        """`rare` = (class names, k): the few-shot set shows each of those classes in exactly
        k images (`cat_models.data.rare_class_subset`) instead of the harness's KL-greedy set."""
        from cat_models.data import (
            kl_greedy_subset,
            label_histograms,
            open_dataset,
            rare_class_subset,
        )
        from cat_models.metrics.evaluator import Evaluator
        from cat_models.oasis.source import load_source
        from cat_models.segmenters import load_segmenter

        self.cache, self.size, self.seed = cache, size, seed
        source_pt = find_one(cache, "source-model", "source.pt", "synthetic_source",
                             source_seed, source_iterations)
        self.source = load_source(source_pt)
        source_inputs = json.loads((source_pt.parent / "STAGE.json").read_text())["inputs"]
        source_root = Path(source_inputs["ref"]["root"])
        self.source_iterations = source_inputs.get("iterations")
        self.target_kind = target_kind
        self.segmenter_stage = ("segmenter-source" if target_kind == SOURCE_KIND
                                else "segmenter-target")
        root = target_root(cache, target_kind)
        plain = open_dataset("folder", root, "train", RESOLUTION)
        self.test = open_dataset("folder", root, "val", RESOLUTION)
        self.source_train = open_dataset("folder", source_root, "train", RESOLUTION)
        # The harness's few-shot set: KL-greedy (paper §4.1); nested in the size.
        hist = label_histograms(plain, progress=False)
        if rare is None:
            indices = kl_greedy_subset(hist, size, seed)
        else:
            names, per_class = rare
            unknown = sorted(set(names) - set(plain.class_names))
            if unknown:
                raise SystemExit(f"--rare: {unknown} are not classes of {target_kind} "
                                 f"({plain.class_names})")
            ids = [plain.class_names.index(n) + 1 for n in names]
            indices = rare_class_subset(hist, size, seed, ids, per_class)
            self.subset_tag = f"-rare{per_class}-" + "-".join(n.replace(" ", "_") for n in names)
        self.subset = plain.subset(indices)   # for the affinity estimators (no augmentation)
        self.train = open_dataset("folder", root, "train", RESOLUTION,
                                  augment=True).subset(indices)
        self.evaluator = Evaluator(
            self.test, self.test,
            load_segmenter(find_one(cache, self.segmenter_stage, "segmenter.pt", target_kind)),
            n_samples=n_samples, cache_dir=cache / "fid_stats", seed=0, floor_dataset=plain)
        self.source_segmenter = find_one(cache, "segmenter-source", "segmenter.pt",
                                         "synthetic_source")
        import torch

        items = [self.test[i] for i in range(len(self.test))]
        real = torch.stack([it["image"] for it in items])
        self.real_tv = texture(real)["tv"]
        self.real_tv_class = class_texture(real, torch.stack([it["label"] for it in items]),
                                           self.test.class_names)
        self.train_evaluator = None
        f = self.evaluator.floor
        print(f"[floor] FID {f['fid_floor']:.1f}  KID {f['kid_floor']:.4f} ± "
              f"{f['kid_floor_std']:.4f} (n={f['n_floor']} held-out real images); mIoU of "
              f"the real test images {self.evaluator.reference['miou_real']:.3f}; texture "
              f"energy of the real test images {self.real_tv:.4f}", flush=True)

    def score(self, generator) -> dict[str, float]:
        """FID, KID ± std, mIoU, and `tv`: the samples' texture energy (mean absolute
        difference of neighbouring pixels, images in [-1, 1]; the real test images' value is
        `self.real_tv`): a smoothing generator loses it."""
        import torch

        from cat_models.oasis.sampling import sample_images

        drawn, maps = [], []

        def sampler(labels):
            images = sample_images(generator, labels, seed=0)
            drawn.append(images.detach().float().cpu())
            maps.append(labels.cpu())
            return images

        m = self.evaluator.evaluate(sampler)
        out = {k: round(float(m[k]), 5) for k in ("fid", "kid", "kid_std", "miou")}
        out["iou"] = {k: round(float(v), 4) for k, v in m["per_class_iou"].items()}
        images = torch.cat(drawn)
        out.update(texture(images))
        out["tv_class"] = class_texture(images, torch.cat(maps), self.test.class_names)
        if self.train_evaluator is not None:
            t = self.train_evaluator.evaluate(
                lambda labels: sample_images(generator, labels, seed=0))
            out.update(fid_train=round(float(t["fid"]), 5), kid_train=round(float(t["kid"]), 5),
                       miou_train=round(float(t["miou"]), 5))
        return out

    def save_samples(self, generator, path: Path, n: int = 8) -> Path:
        """A PNG of the first `n` test label maps: rows label map | real | generated (the
        harness's trial grid), noise seed 0 as in `score`."""
        import torch

        from cat_models.oasis.sampling import sample_images
        from harness.trial import sample_grid, save_grid

        items = [self.test[i] for i in range(min(n, len(self.test)))]
        labels = torch.stack([it["label"] for it in items])
        real = torch.stack([it["image"] for it in items])
        with torch.no_grad():
            fake = sample_images(generator, labels, seed=0)
        save_grid(path, sample_grid(labels, real, fake, self.test.num_classes), scale=3)
        return path

    def track_training_set(self) -> None:
        """Also score every model against the few-shot set itself (its own images as the
        real statistics, its label maps as the inputs): `fid_train` / `kid_train` /
        `miou_train`. A generator that memorises the few-shot set improves there while the
        test-set FID worsens. Statistics are not cached (a subset's key is its split's)."""
        from cat_models.metrics.evaluator import Evaluator

        self.train_evaluator = Evaluator(self.subset, self.subset, self.evaluator.segmenter,
                                         n_samples=len(self.subset), cache_dir=None, seed=0)

    def training_free(self, affinity: Any) -> dict[str, float]:
        from cat_models.oasis.sampling import training_free_generator

        return self.score(training_free_generator(self.source, affinity))

    def few_shot_scores(self, matrices: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Each matrix's training-free FID and mIoU on the few-shot set, as the harness's
        affinity stage scores them (`harness.stages_affinity.few_shot_scores`, with the
        evaluation segmenter of `self.evaluator`): the combination's tie-break
        (`fid_ranking`) and the weighted vote's weights; never the test split."""
        from cat_models.oasis.sampling import sample_images, training_free_generator
        from harness import stages_affinity

        return stages_affinity.few_shot_scores(
            self.subset, self.evaluator.segmenter, matrices,
            lambda matrix: training_free_generator(self.source, matrix),
            lambda g, labels: sample_images(g, labels, seed=0),
            cache_dir=self.cache / "fid_stats")

    def affinities(self, wanted: list[str], store: Path | None = None,
                   ranking: list[str] | None = None) -> dict[str, Any]:
        """The harness's estimators and settings on this few-shot set; the combination's
        tie-break ranks the base methods by training-free FID on the few-shot set, as the
        harness does (paper §3.1; `few_shot_scores`), or follows `ranking` (best first) when
        given. (Rows written before 2026-12-05, evening, ranked by the test split's FID.)
        With `store`, matrices are saved to / reloaded from
        `store/size<n>-seed<s>[-rare<k>-<classes>]-{fewshot|rank-<ranking>}/` (the source model
        and the set decide
        them; delete the folder after rebuilding the cache); a reloaded combination's order is
        the one its provenance records (`stored_ranking`)."""
        from cat_models.affinity.matrix import AffinityMatrix

        self.ranking = ranking   # the tie-break order used; None until estimated or forced
        suffix = "-rank-" + "-".join(ranking) if ranking else "-fewshot"
        folder = (store / f"size{self.size}-seed{self.seed}{self.subset_tag}{suffix}"
                  if store else None)
        names = [m for m in ("text", "segmentation", "features", *wanted) if m != "random"]
        if folder is not None and all((folder / f"{m}.npy").is_file() for m in names):
            self.ranking = stored_ranking(folder) or ranking
            return {m: AffinityMatrix.load(folder / f"{m}.npy") for m in names}
        out = self._estimate(wanted, ranking)
        if folder is not None:
            for m, matrix in out.items():
                matrix.save(folder / f"{m}.npy")
        return out

    def _estimate(self, wanted: list[str], ranking: list[str] | None) -> dict[str, Any]:
        from cat_models.affinity.registry import AffinityInputs, estimate_affinity
        from cat_models.segmenters import load_segmenter

        inputs = AffinityInputs(source_names=self.source_train.class_names,
                                target_names=self.test.class_names,
                                source_dataset=self.source_train, target_dataset=self.subset,
                                segmenter=load_segmenter(self.source_segmenter), seed=self.seed)
        options = {"features": {"backend": "inception",
                                "backend_options": {"layer": "mixed_7", "input_size": 128},
                                "max_source_images": 200}}
        out: dict[str, Any] = {}
        bases = ("text", "segmentation", "features")
        for method in bases:
            out[method] = estimate_affinity(method, inputs, **options.get(method, {}))
        combos = [m for m in wanted if m not in (*bases, "random")]
        if combos:
            from harness.stages_affinity import fid_ranking

            # the test-split scores are printed for the record (paper Table 3's base rows);
            # the tie-break ranks as the harness's affinity stage does, on the few-shot set
            test_scores = {m: self.training_free(out[m]) for m in bases}
            print(f"[affinity] training-free: {test_scores}", flush=True)
            if ranking is None:
                few = self.few_shot_scores({m: out[m] for m in bases})
                ranking = fid_ranking(few)
                print(f"[affinity] tie-break order {ranking} (training-free FID on the "
                      "few-shot set: " + ", ".join(f"{m} {few[m]['fid']:.1f}" for m in ranking)
                      + ")", flush=True)
            inputs.matrices = {m: out[m] for m in bases}
            inputs.fid_ranking = self.ranking = ranking
            for method in combos:
                out[method] = estimate_affinity(method, inputs, **(
                    {"fid_ranking": ranking} if method == "combination" else {}))
        return out


# the three per-iteration panels every fidelity script draws: metric key -> panel title
PANEL_TITLES = {"fid": "FID (lower is better)", "kid": "KID", "miou": "mIoU (higher is better)"}

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def line_panels(panels: list[dict], path: Path, width: int = 330, height: int = 230) -> Path:
    """A small PNG of line plots side by side, with PIL only (no plotting library here).

    Each panel: {"title", "series": [{"label", "x", "y", "colour" (index), "dash" (bool)}],
    "hlines": [{"y", "colour" (index or None = black), "label"}]}. The legend lists every
    series label of the first panel and every labelled line of any panel, once.
    """
    from PIL import Image, ImageDraw

    left, right, top, bottom = 46, 8, 22, 30
    canvas = Image.new("RGB", (width * len(panels),
                               height + 16 * _legend_rows(panels, width * len(panels))),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for i, panel in enumerate(panels):
        x0 = i * width
        xs = [x for s in panel["series"] for x in s["x"]]
        ys = [y for s in panel["series"] for y in s["y"]] + [h["y"] for h in panel.get(
            "hlines", [])]
        lo_x, hi_x = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        lo_y, hi_y = min(ys), max(ys)
        pad = 0.05 * (hi_y - lo_y or 1)
        lo_y, hi_y = lo_y - pad, hi_y + pad

        def px(x, y, x0=x0, lo_x=lo_x, hi_x=hi_x, lo_y=lo_y, hi_y=hi_y):
            return (x0 + left + (x - lo_x) / (hi_x - lo_x) * (width - left - right),
                    top + (hi_y - y) / (hi_y - lo_y) * (height - top - bottom))

        draw.rectangle([x0 + left, top, x0 + width - right, height - bottom], outline="black")
        draw.text((x0 + left, 4), panel["title"], fill="black")
        for t in range(5):
            y = lo_y + (hi_y - lo_y) * t / 4
            _, py = px(lo_x, y)
            draw.line([x0 + left - 3, py, x0 + left, py], fill="black")
            draw.text((x0 + 2, py - 6), _fmt(y), fill="black")
            x = lo_x + (hi_x - lo_x) * t / 4
            qx, _ = px(x, lo_y)
            draw.line([qx, height - bottom, qx, height - bottom + 3], fill="black")
            tick = f"{x:.0f}"   # centred on its mark, kept inside the panel
            w = draw.textlength(tick)
            draw.text((min(qx - w / 2, x0 + width - w - 1), height - bottom + 5), tick,
                      fill="black")
        for h in panel.get("hlines", []):
            colour = (0, 0, 0) if h.get("colour") is None else COLOURS[h["colour"] % 10]
            _, py = px(lo_x, h["y"])
            for seg in range(int(x0 + left), int(x0 + width - right), 8):
                draw.line([seg, py, seg + 3, py], fill=colour)
        for s in panel["series"]:
            pts = [px(x, y) for x, y in zip(s["x"], s["y"])]
            colour = COLOURS[s.get("colour", 0) % 10]
            if s.get("dash"):
                for a, b in zip(pts[::2], pts[1::2]):
                    draw.line([a, b], fill=colour, width=2)
            else:
                draw.line(pts, fill=colour, width=2)
            for q in pts:
                draw.ellipse([q[0] - 2, q[1] - 2, q[0] + 2, q[1] + 2], fill=colour)
    seen, y = [], height
    ncol = _legend_columns(panels, width * len(panels))
    for s in panels[0]["series"] + _labelled_lines(panels):
        key = s.get("label")
        if key and key not in seen:
            seen.append(key)
            col = len(seen) - 1
            cx, cy = 8 + (col % ncol) * (width * len(panels) // ncol), y + 16 * (col // ncol)
            colour = (0, 0, 0) if s.get("colour") is None else COLOURS[s["colour"] % 10]
            draw.line([cx, cy + 6, cx + 18, cy + 6], fill=colour, width=3)
            draw.text((cx + 22, cy), key, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


def _labelled_lines(panels: list[dict]) -> list[dict]:
    return [h for p in panels for h in p.get("hlines", []) if h.get("label")]


def _legend_labels(panels: list[dict]) -> set[str]:
    labels = {s.get("label") for s in panels[0]["series"]}
    return (labels | {h["label"] for h in _labelled_lines(panels)}) - {None}


def _legend_columns(panels: list[dict], total_width: int) -> int:
    """Up to three legend columns, fewer when the longest label (PIL's default font, about
    6 px a character, after a 30 px swatch) would run into the next column."""
    longest = max((len(label) for label in _legend_labels(panels)), default=0)
    return max(1, min(3, total_width // (6 * longest + 40)))


def _legend_rows(panels: list[dict], total_width: int) -> int:
    return -(-len(_legend_labels(panels)) // _legend_columns(panels, total_width)) + 1


def _fmt(v: float) -> str:
    """Tick label with three significant digits (0.165, 2.41, 265)."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
