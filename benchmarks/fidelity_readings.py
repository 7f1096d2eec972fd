"""What the fidelity benchmarks read off images and generators: texture energy overall and
per class (a smoothing generator loses it), and how a CAT generator tells the target classes
apart (`label_pathways`, read from its weights)."""

from __future__ import annotations

from typing import Any


def neighbour_differences(images: Any) -> tuple[Any, Any]:
    """|vertical| [B, H-1, W] and |horizontal| [B, H, W-1] neighbour differences of
    [B, 3, H, W] images, averaged over the channels."""
    return ((images[:, :, 1:] - images[:, :, :-1]).abs().mean(1),
            (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean(1))


def texture(images: Any) -> dict[str, float]:
    """Texture energy of images in [-1, 1]: `tv_y` / `tv_x` the mean absolute vertical /
    horizontal neighbour difference (horizontal stripes raise `tv_y`), `tv` their mean;
    high for textured images, low for smooth ones."""
    dy, dx = neighbour_differences(images)
    tv_y, tv_x = float(dy.mean()), float(dx.mean())
    return {"tv": round((tv_y + tv_x) / 2, 5), "tv_y": round(tv_y, 5), "tv_x": round(tv_x, 5)}


def class_texture(images: Any, labels: Any, names: list[str]) -> dict[str, list[float]]:
    """Per class: [tv_y, tv_x], the mean absolute vertical / horizontal neighbour difference
    inside the class's regions (pairs of pixels both of that class)."""
    dy, dx = neighbour_differences(images)
    out = {}
    for k, name in enumerate(names, start=1):
        my = (labels[:, 1:] == k) & (labels[:, :-1] == k)
        mx = (labels[:, :, 1:] == k) & (labels[:, :, :-1] == k)
        if my.any() and mx.any():
            out[name] = [round(float(dy[my].mean()), 4), round(float(dx[mx].mean()), 4)]
    return out


def label_pathways(generator: Any, source_names: list[str], target_names: list[str],
                   ground_truth: dict[str, str | None] | None = None) -> dict[str, Any]:
    """How a CAT generator tells the target classes apart, read from its weights.

    Inside a region of one target class t, each SPADE's first conv (`conv_gamma` /
    `conv_beta` or `conv_shared`) sees the constant vector A[:, t] on its label channels, and
    the residual branch (`res_gamma` / `res_beta`) the one-hot of t; summing each kernel over
    its taps gives the two paths' per-class responses, e_A(t) and e_R(t) (biases left out:
    they are the same for every class). Returned:
      `res_share`: mean of |e_R| / (|e_A| + |e_R|) over classes, SPADEs and branches: 0 while
        the target classes reach G only through A (the residuals start at zero), near 1 when
        the residual branches carry them;
      `class_contrast`: mean distance between two classes' responses e_A + e_R over their
        mean norm: how distinct the classes are to G (a near-uniform random A starts low);
      `a_top1` (with `ground_truth`, target -> source class or None): the fraction of the
        target classes with a counterpart whose column of A has its largest entry there;
      `a_argmax`: target class -> source class of the column's largest entry.
    """
    import torch

    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.oasis.transfer import CATSPADE

    a_full = generator.condition.affinity.weight.detach().float()   # [C_S+1, C_T+1]
    learned = AffinityMatrix(a_full[1:, 1:].numpy(), source_names, target_names, "learned")
    z_dim = generator.cfg.z_dim
    shares, contrasts = [], []
    for m in generator.modules():
        if not isinstance(m, CATSPADE):
            continue
        mains = ([m.conv_gamma, m.conv_beta] if m.split else [m.conv_shared, m.conv_shared])
        residuals = [m.res_gamma, m.res_beta] if m.residual else [None, None]
        for main, res in zip(mains, residuals):
            w = main.weight.detach().float().sum((2, 3))[:, z_dim:]       # [out, C_S+1]
            e_a = (w @ a_full)[:, 1:]                                      # [out, C_T]
            e_r = (res.weight.detach().float().sum((2, 3))[:, 1:] if res is not None
                   else torch.zeros_like(e_a))
            na, nr = e_a.norm(dim=0), e_r.norm(dim=0)
            shares.append(float((nr / (na + nr).clamp_min(1e-12)).mean()))
            codes = (e_a + e_r).T                                          # [C_T, out]
            pair = torch.cdist(codes, codes)
            n = codes.shape[0]
            mean_pair = pair.sum() / max(n * (n - 1), 1)
            contrasts.append(float(mean_pair / codes.norm(dim=1).mean().clamp_min(1e-12)))
    best = learned.argmax_source()
    out: dict[str, Any] = {
        "res_share": round(sum(shares) / len(shares), 4) if shares else 0.0,
        "class_contrast": round(sum(contrasts) / len(contrasts), 4) if contrasts else 0.0,
        "a_argmax": {t: source_names[best[k]] for k, t in enumerate(target_names)},
    }
    if ground_truth is not None:
        hits, counted = learned.top1_agreement(ground_truth)
        out["a_top1"] = round(hits / counted, 4) if counted else None
    return out
