"""Paper-shaped result tables from a study's final view (paper Tables 1–5).

Rows are the combinations of the study's declared axes (method, target size, any swept key),
columns are metrics — grouped per transfer pair when there are several — as mean ± std over
seeds. The best mean per column is bold, headers carry ↓/↑, and the switches that distinguish
ablation rows (paper Tables 4/5: FreezeD, 2 stages, Resid., CAT) are ✓/✗ columns. Building
(`build_table`) is pure; `to_markdown` / `to_latex` / `to_csv` / `to_html` only render.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.load import is_missing
from harness.analysis.metrics import MetricSpec, metric_spec


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool | np.bool_)


def _set(v: Any) -> bool:
    """Present: not None/NaN (a method that lacks an option has NaN in its column)."""
    return not is_missing(v) and v is not False


def _truthy(v: Any) -> bool:
    return _set(v) and bool(v)


@dataclass(frozen=True)
class Switch:
    """An on/off column of an ablation table and how a parameter value maps to on."""

    label: str
    is_on: Callable[[Any], bool] = _truthy


SWITCHES: dict[str, Switch] = {
    "freeze_d": Switch("FreezeD", lambda v: _set(v) and float(v) > 0),  # paper Table 4
    "two_stage": Switch("2 stages"),
    "residual": Switch("Resid."),
    "split": Switch("Split"),
    "fix_decoder": Switch("FixDec"),                                      # paper Table 5
    "prompts": Switch("Prompts"),
    "prompt_count": Switch("Prompts", lambda v: _set(v) and float(v) > 0),   # PITI's option
    "affinity": Switch("CAT", lambda v: _set(v) and v != "random"),       # A from classes
    "training_free": Switch("Training-free"),                             # paper Table 3
}
AXIS_LABELS = {"method": "Method", "target_size": "Target size", "seed": "Seed",
               "pair": "Pair", "model": "Model", "affinity": "Affinity", "lr_g": "lr G",
               "lr_d": "lr D", "study": "Study"}
INCOMPLETE_MARK = "†"


def axis_label(name: str) -> str:
    return AXIS_LABELS.get(name, name.replace("_", " "))


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float          # sample std over seeds (ddof=1); one seed: the trial's own spread
    n: int              # (MetricSpec.spread, e.g. KID's std over subsets) or NaN
    best: bool = False
    incomplete: bool = False  # some trial of this cell did not finish (last eval used)
    own_spread: bool = False  # std is the trial's own spread, not a spread over seeds


@dataclass
class Table:
    title: str
    row_axes: list[str]
    switches: list[str]
    rows: list[dict[str, Any]]                  # axis/switch name -> value, one per row
    groups: list[str]                           # column groups (transfer pairs)
    metrics: list[MetricSpec]
    cells: dict[tuple[int, str, str], Cell] = field(default_factory=dict)
    italic_rows: set[int] = field(default_factory=set)

    def cell(self, row: int, metric: str, group: str | None = None) -> Cell | None:
        return self.cells.get((row, self.groups[0] if group is None else group, metric))

    def column(self, metric: str, group: str | None = None) -> list[Cell | None]:
        return [self.cell(i, metric, group) for i in range(len(self.rows))]


# ----------------------------------------------------------------------------- building
def _order_key(axis: str, order: dict[str, list[Any]]) -> Callable[[pd.Series], pd.Series]:
    known = order.get(axis, [])

    def key(col: pd.Series) -> pd.Series:
        if known:
            return col.map(lambda v: known.index(v) if v in known else len(known))
        return col
    return key


def varying_switches(final: pd.DataFrame, row_axes: list[str],
                     candidates: list[str]) -> list[str]:
    """Candidate switch keys that are not row axes and differ between rows (registry order).

    `affinity` is the CAT switch only next to other switches (an ablation, paper Table 4);
    alone it is an ordinary axis (paper Table 1). PITI's `use_affinity` option is not a
    column of its own: a row without A names no affinity, so the CAT column already says it.
    """
    def varies(key: str) -> bool:
        if key not in final or key in row_axes:
            return False
        values = final[key].map(lambda v: SWITCHES[key].is_on(v) if key in SWITCHES else v)
        return values.nunique(dropna=False) > 1

    keys = [k for k in candidates if k not in ("affinity", "use_affinity") and varies(k)
            and (k in SWITCHES or final[k].dropna().map(_is_bool).all())]
    if keys and "affinity" in candidates and varies("affinity"):
        keys.append("affinity")
    return sorted(keys, key=lambda k: list(SWITCHES).index(k) if k in SWITCHES else 99)


def group_label(axis: str, value: Any) -> str:
    """Column-group header part: the pair as is ("COCO→ADE"), a size as "100 images"."""
    if axis == "pair":
        return str(value)
    if axis == "target_size":
        return f"{_label_text(value)} images"
    return f"{axis_label(axis)} {_label_text(value)}"


def _sorted_keys(frame: pd.DataFrame, axes: list[str],
                 order: dict[str, list[Any]]) -> pd.DataFrame:
    keys = frame[axes].drop_duplicates()
    for axis in reversed(axes):
        keys = keys.sort_values(axis, key=_order_key(axis, order), kind="stable")
    return keys


def build_table(final: pd.DataFrame, rows: list[str], metrics: list[str],
                group_by: list[str] | str | None = "pair", switches: list[str] | None = None,
                order: dict[str, list[Any]] | None = None, title: str = "") -> Table:
    """Aggregate the final view over everything not in `rows`/`group_by` (the seeds).

    `group_by` axes become column groups (one per transfer pair, paper Tables 1–2; one per
    target size, so best-in-column compares methods at equal data). `order` fixes the order
    per axis (e.g. methods as declared in the study); other axes sort naturally. Best =
    lowest/highest mean at display precision, ties all bold.
    """
    order = order or {}
    gcols = [group_by] if isinstance(group_by, str) else list(group_by or [])
    gcols = [g for g in gcols if g in final]
    missing = [k for k in [*rows, *metrics] if k not in final]
    if missing:
        raise KeyError(f"build_table: columns {missing} not in the results "
                       f"(have {sorted(final.columns)})")
    data = final.copy()
    data["_group"] = [" · ".join(group_label(g, r[g]) for g in gcols)
                      for _, r in data.iterrows()]
    groups = list(dict.fromkeys(
        data.loc[_sorted_keys(data, gcols, order).index, "_group"])) if gcols else [""]
    switches = [s for s in (switches or []) if s in data]
    # Rows are keyed by the axes *and* the switches' on/off state, so trials that share a
    # method label but differ in a switch (e.g. a training-free and a finetuned study
    # combined, paper Table 3) stay separate rows.
    switch_cols = [f"_switch_{s}" for s in switches]
    for s, col in zip(switches, switch_cols):
        data[col] = data[s].map(SWITCHES[s].is_on if s in SWITCHES else _truthy).astype(bool)
    key_cols = [*rows, *switch_cols]
    keys = _sorted_keys(data, key_cols, order) if key_cols else pd.DataFrame(index=[0])
    table = Table(title=title, row_axes=list(rows), switches=switches, rows=[], groups=groups,
                  metrics=[metric_spec(m) for m in metrics])
    for i, (_, key) in enumerate(keys.iterrows()):
        mask = np.ones(len(data), dtype=bool)
        for axis in key_cols:
            mask &= (data[axis] == key[axis]).to_numpy() | (data[axis].isna()
                                                             & pd.isna(key[axis])).to_numpy()
        sub = data[mask]
        label = {axis: key[axis] for axis in rows}
        label.update({s: bool(key[col]) for s, col in zip(switches, switch_cols)})
        table.rows.append(label)
        if "training_free" in switches and not label["training_free"]:
            table.italic_rows.add(i)  # paper Table 3: finetuned reference rows in italic
        for group in groups:
            part = sub[sub["_group"] == group]
            incomplete = bool(("status" in part) and (part["status"] != "complete").any())
            for spec in table.metrics:
                values = part[spec.name].astype(float).dropna() * spec.scale
                if len(values) > 1:
                    table.cells[(i, group, spec.name)] = Cell(
                        float(values.mean()), float(values.std(ddof=1)), len(values),
                        incomplete=incomplete)
                elif len(values):
                    own = (float(part.loc[values.index, spec.spread].iloc[0]) * spec.scale
                           if spec.spread and spec.spread in part else float("nan"))
                    table.cells[(i, group, spec.name)] = Cell(
                        float(values.iloc[0]), own, 1, incomplete=incomplete,
                        own_spread=not math.isnan(own))
    _mark_best(table)
    return table


def _mark_best(table: Table) -> None:
    for group in table.groups:
        for spec in table.metrics:
            if spec.reference:
                continue
            found = {i: c for i in range(len(table.rows))
                     if (c := table.cells.get((i, group, spec.name))) and not math.isnan(c.mean)}
            if not found:
                continue
            shown = {i: round(c.mean, spec.decimals) for i, c in found.items()}
            target = min(shown.values()) if spec.direction == "min" else max(shown.values())
            for i, c in found.items():
                if shown[i] == target:
                    table.cells[(i, group, spec.name)] = dataclasses.replace(c, best=True)


# ----------------------------------------------------------------------------- rendering
def format_value(cell: Cell | None, spec: MetricSpec) -> str:
    """"40.9 ± 1.2" (std omitted with one seed); "–" for a missing cell."""
    if cell is None or math.isnan(cell.mean):
        return "–"
    text = f"{cell.mean:.{spec.decimals}f}"
    if not math.isnan(cell.std):
        text += f" ± {cell.std:.{spec.decimals}f}"
    return text


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "–" if is_missing(value) else str(value)


def _column_headers(table: Table) -> list[tuple[str, MetricSpec]]:
    return [(g, spec) for g in table.groups for spec in table.metrics]


def _rendered(table: Table, bold: Callable[[str], str], italic: Callable[[str], str],
              check: tuple[str, str], escape: Callable[[str], str]) -> list[list[str]]:
    """Body cells as text, in one pass shared by the Markdown, LaTeX and HTML renderers."""
    body = []
    for i, row in enumerate(table.rows):
        cells = [escape(_label_text(row[a])) for a in table.row_axes]
        cells += [check[0] if row[s] else check[1] for s in table.switches]
        for group, spec in _column_headers(table):
            c = table.cells.get((i, group, spec.name))
            text = escape(format_value(c, spec)) + (INCOMPLETE_MARK if c and c.incomplete
                                                    else "")
            cells.append(bold(text) if c and c.best else text)
        body.append([italic(t) if i in table.italic_rows and t not in check else t
                     for t in cells])
    return body


def footnote(table: Table) -> str:
    n = max((c.n for c in table.cells.values()), default=0)
    note = (f"mean ± std over seeds (up to {n} trials per cell; a study with source_seeds "
            "pools its source-pretraining seeds too); best per column in bold; "
            "↓ lower / ↑ higher is better.")
    own = sorted({spec.label for (_, _, name), c in table.cells.items() if c.own_spread
                  for spec in table.metrics if spec.name == name})
    if own:
        note += (f" Single-seed {', '.join(own)}: ± is the trial's own standard deviation "
                 "(KID: over its 100 subsets; real-side sampling only).")
    note += "".join(f" {spec.label}: {spec.note}." for spec in table.metrics if spec.note)
    if table.italic_rows:
        note += " Italic rows: finetuned references (not training-free)."
    if any(c.incomplete for c in table.cells.values()):
        note += f" {INCOMPLETE_MARK} includes unfinished trials (their last evaluation)."
    return note


def to_markdown(table: Table) -> str:
    def md(text: str) -> str:
        return text.replace("|", "\\|")
    heads = [axis_label(a) for a in table.row_axes] + [SWITCHES[s].label if s in SWITCHES
                                                       else axis_label(s)
                                                       for s in table.switches]
    heads += [f"{g} {spec.header}".strip() for g, spec in _column_headers(table)]
    body = _rendered(table, lambda t: f"**{t}**", lambda t: f"*{t}*", ("✓", "✗"), md)
    align = ["---"] * (len(table.row_axes) + len(table.switches))
    align += ["--:"] * len(_column_headers(table))
    lines = ([f"**{table.title}**", ""] if table.title else [])
    lines += ["| " + " | ".join(heads) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines + ["", footnote(table)]) + "\n"


# One pass, character by character, so the replacements' own "\\" and "$" are not re-escaped;
# the non-ASCII symbols we print become math so the table compiles under pdflatex too.
TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
             "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
             "^": r"\textasciicircum{}", "±": r"$\pm$", "→": r"$\to$", "×": r"$\times$",
             "·": r"$\cdot$", "³": r"$^3$", "–": "--", "↓": r"$\downarrow$",
             "↑": r"$\uparrow$", INCOMPLETE_MARK: r"$^\dagger$"}


def _tex(text: str) -> str:
    return "".join(TEX_CHARS.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs,amssymb})."""
    n_label = len(table.row_axes) + len(table.switches)
    n_metric = len(table.metrics)
    spec = "l" * len(table.row_axes) + "c" * len(table.switches) + "r" * (n_metric *
                                                                            len(table.groups))
    lines = ["% requires \\usepackage{booktabs,amssymb}", f"\\begin{{tabular}}{{{spec}}}",
             "\\toprule"]
    if any(table.groups):
        tops = [f"\\multicolumn{{{n_metric}}}{{c}}{{{_tex(g)}}}" for g in table.groups]
        lines.append(" & ".join([""] * n_label + tops) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{n_label + 1 + k * n_metric}-"
                              f"{n_label + (k + 1) * n_metric}}}"
                              for k in range(len(table.groups))))
    heads = [axis_label(a) for a in table.row_axes]
    heads += [SWITCHES[s].label if s in SWITCHES else axis_label(s) for s in table.switches]
    heads = [_tex(h) for h in heads] + [_tex(s.header) for _, s in _column_headers(table)]
    lines += [" & ".join(heads) + " \\\\", "\\midrule"]
    body = _rendered(table, lambda t: f"\\textbf{{{t}}}", lambda t: f"\\textit{{{t}}}",
                     (r"\checkmark", r"$\times$"), _tex)
    lines += [" & ".join(r) + " \\\\" for r in body]
    lines += ["\\bottomrule", "\\end{tabular}", f"% {footnote(table)}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    heads = [axis_label(a) for a in table.row_axes]
    heads += [SWITCHES[s].label if s in SWITCHES else axis_label(s) for s in table.switches]
    n_label = len(heads)
    out = ["<table class='results'>", "<thead>"]
    if any(table.groups):
        out.append("<tr>" + "<th></th>" * n_label + "".join(
            f"<th colspan='{len(table.metrics)}'>{html.escape(g)}</th>" for g in table.groups)
            + "</tr>")
    heads += [s.header for _, s in _column_headers(table)]
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>")
    out.append("</thead><tbody>")
    body = _rendered(table, lambda t: f"<b>{t}</b>", lambda t: f"<i>{t}</i>", ("✓", "✗"),
                     html.escape)
    out += ["<tr>" + "".join(f"<td>{t}</td>" for t in r) + "</tr>" for r in body]
    out.append(f"</tbody></table><p class='note'>{html.escape(footnote(table))}</p>")
    return "\n".join(out)


def to_csv(table: Table) -> str:
    """Numbers, not text: row labels, switches (True/False), then mean/std/n/best per column."""
    records = []
    for i, row in enumerate(table.rows):
        rec = {axis_label(a): row[a] for a in table.row_axes}
        rec.update({SWITCHES[s].label if s in SWITCHES else s: row[s] for s in table.switches})
        for group, spec in _column_headers(table):
            c = table.cells.get((i, group, spec.name))
            prefix = f"{group} {spec.label}".strip()
            rec.update({f"{prefix} mean": c.mean if c else np.nan,
                        f"{prefix} std": c.std if c else np.nan,
                        f"{prefix} n": c.n if c else 0,
                        f"{prefix} best": bool(c and c.best)})
        records.append(rec)
    return pd.DataFrame.from_records(records).to_csv(index=False)


RENDERERS: dict[str, tuple[str, Callable[[Table], str]]] = {
    "md": (".md", to_markdown), "tex": (".tex", to_latex), "csv": (".csv", to_csv),
}
