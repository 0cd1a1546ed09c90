"""Assemble ``<out>/report.md`` from the stage records ``<out>/stages/<stage>.json``.

    write_report(Path("reports/default"), meta=ctx.meta())

A stage record is ``{"stage", "seconds", ...summary}``; the report reads from the summary:
``tables`` / ``figures`` (lists of ``{"file": "tables/x.csv", "caption": "one sentence"}``),
``notes`` (list of sentences shown under the stage) and ``proxy`` (sentences saying which
numbers are proxies, collected into the provenance section). Any subset of stages works: the
missing ones are listed with the command that produces them.

Order: "Findings" first (``analysis.report.findings`` of the run's own ``tables/*.csv``: one line per
claim of the paper with number, interval, verdict and link), then the paper's published numbers
beside ours (``analysis.report.paper``), then one section per stage, and last the wall time per stage
and the provenance.

A table entry may also name the ``columns`` the report shows (the CSV keeps all of them):
``{"file": "tables/costs.csv", "caption": "...", "columns": ["preset", "norm", "params"]}``.
Without ``columns``, a table wider than ``MAX_TABLE_COLUMNS`` / ``MAX_TABLE_WIDTH`` is shown
transposed when it has few rows, else with its leading columns; either way the report says
which columns only the CSV holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fileio import write_text_atomic

from analysis.context import SYNTHETIC_DATAROOT
from analysis.report import paper
from analysis.report.findings import TABLE_STAGES, findings, render_findings
from analysis.report.roi import format_value, to_markdown
from analysis.stages.registry import reported_stages

# One section per stage, in the registry's order, under the registry's title.
STAGE_ORDER = tuple(s.name for s in reported_stages())
STAGE_TITLES = {s.name: s.title for s in reported_stages()}
MAX_TABLE_ROWS = 20
# A GitHub page shows about this much of a Markdown table before it scrolls sideways.
MAX_TABLE_COLUMNS = 10
MAX_TABLE_WIDTH = 200        # characters of the widest Markdown line
MAX_TRANSPOSED_ROWS = 6      # a wide table with at most this many rows is shown transposed
PROVENANCE_KEYS = (("created", "created"), ("command", "command"), ("git_commit", "git commit"),
                   ("python", "python"), ("torch", "torch"), ("numpy", "numpy"),
                   ("device", "device"), ("device_name", "device name"),
                   ("torch_threads", "torch threads"), ("platform", "platform"), ("seed", "seed"),
                   ("preset", "dataset preset"), ("dataroot", "dataset"),
                   ("checkpoints", "evaluated checkpoints (not trained in this run)"), ("quick", "quick run"))


# The settings the report's header states, as each stage record holds them: the run settings
# that determined the stage (``stage_settings.run``) and the machine it ran on (``ran_on``).
HEADER_SETTINGS = ("preset", "dataroot", "seed", "quick", "checkpoints", "device", "device_name")


def recorded_settings(records: dict[str, dict]) -> dict[str, dict]:
    """{setting: {value: [stages that recorded it]}} over the stage records (a record written
    before records held a setting counts under the value ``"not recorded"``)."""
    held = {key: {} for key in HEADER_SETTINGS}
    for name, record in records.items():
        values = {**record.get("stage_settings", {}).get("run", {}), **record.get("ran_on", {})}
        for key in HEADER_SETTINGS:
            value = values.get(key, "not recorded")
            held[key].setdefault(value if not isinstance(value, list) else tuple(value), []).append(name)
    return held


def header_lines(settings: dict[str, dict], meta: dict) -> list[str]:
    """What data, seed and device the results come from, from the stage records'
    :func:`recorded_settings` (``meta``, the report command's own provenance, only when no stage
    ran); a warning when the stages disagree."""
    recorded = any(settings.values())
    if not recorded:
        settings = {key: {meta.get(key): []} for key in HEADER_SETTINGS}
    single = {key: next(iter(values)) for key, values in settings.items() if len(values) == 1}
    mixed = {key: values for key, values in settings.items() if len(values) > 1}

    def shown(key):
        if key in mixed:
            return "*see below*"
        value = single[key]
        return SYNTHETIC_DATAROOT if key == "dataroot" and value is None else value

    line = (f"Dataset preset `{shown('preset')}` ({shown('dataroot')}), seed {shown('seed')}, device "
            f"`{shown('device')}` ({shown('device_name')})")
    if single.get("checkpoints") not in (None, "not recorded"):
        line += f", generators from `{single['checkpoints']}` (not trained in this run)"
    if single.get("quick") is True:
        line += ", **quick run** (CI-sized; numbers are smoke-test quality)"
    lines = [line + (", as the stages recorded them." if recorded else "; no stage has run yet."), ""]
    if mixed:
        lines += ["> **The stages ran on different settings**; compare their numbers with care:", ">"]
        lines += [f"> - {key}: " + "; ".join(f"`{value}` ({', '.join(stages)})" for value, stages in values.items())
                  + "  " for key, values in mixed.items()]
        lines.append("")
    return lines


def recorded_preset(settings: dict[str, dict], meta: dict) -> str:
    """The dataset preset every stage recorded (the report command's own when they differ or none ran)."""
    presets = [p for p in settings["preset"] if p != "not recorded"]
    return presets[0] if len(presets) == 1 else str(meta.get("preset", ""))


def read_records(out: Path, stages=STAGE_ORDER) -> dict[str, dict]:
    """{stage: record} for the stages whose ``stages/<stage>.json`` exists, in stage order."""
    records = {}
    for name in stages:
        path = Path(out) / "stages" / f"{name}.json"
        if path.is_file():
            records[name] = json.loads(path.read_text())
    return records


def _entry(entry) -> dict:
    # A bare path is accepted too; the report then says that the stage gave no caption.
    entry = {"file": entry} if isinstance(entry, str) else dict(entry)
    entry["caption"] = entry.get("caption") or f"{Path(entry['file']).name} (the stage recorded no caption)"
    return entry


def _fits(df: pd.DataFrame) -> bool:
    width = max(len(line) for line in to_markdown(df).splitlines())
    return df.shape[1] <= MAX_TABLE_COLUMNS and width <= MAX_TABLE_WIDTH


def _leading_columns(df: pd.DataFrame) -> list[str]:
    """Columns in CSV order while the table still fits (one too wide on its own is skipped)."""
    kept = []
    for column in df:
        if _fits(df[kept + [column]]):
            kept.append(column)
    return kept


def _transposed(df: pd.DataFrame) -> pd.DataFrame | None:
    """One column per CSV row, headed by the first column's values; None when those repeat."""
    key = df.columns[0]
    text = df.map(format_value)
    if text[key].duplicated().any():
        return None
    flipped = text.set_index(key).T.reset_index()
    flipped.columns = [key, *text[key]]
    return flipped


def render_table(out: Path, entry, max_rows: int = MAX_TABLE_ROWS) -> str:
    """Caption, Markdown table (rounded, at a readable width) and a link to the CSV of one entry.

    Shows the entry's ``columns`` if it names them, else every column, narrowed as the module
    docstring says when too wide. Columns with one value in every row become a sentence under
    the table, and a last sentence names the columns that only the CSV holds.
    """
    entry = _entry(entry)
    path = Path(out) / entry["file"]
    caption = entry["caption"]
    link = f"[{entry['file']}]({entry['file']})"
    if not path.is_file():
        return f"**{caption}** (`{entry['file']}` is missing; re-run the stage with --force)\n"
    df = pd.read_csv(path)
    if not len(df):
        return f"**{caption}** ({link})\n\n(empty table)\n"
    # Names the CSV lacks (a record older than its table) are skipped, not an error.
    chosen = [c for c in entry.get("columns") or df.columns if c in df] or list(df.columns)
    constant = [c for c in chosen if len(df) > 1 and df[c].nunique(dropna=False) == 1]
    if len(constant) == len(chosen):
        constant = []
    varying = [c for c in chosen if c not in constant]
    shown = df[varying].head(max_rows)
    how = f"; first {max_rows} of {len(df)} rows shown" if len(df) > max_rows else ""
    if not entry.get("columns") and not _fits(shown):
        flipped = _transposed(df[varying]) if len(df) <= MAX_TRANSPOSED_ROWS else None
        if flipped is not None and _fits(flipped):
            shown, how = flipped, "; transposed: one column per CSV row"
        else:
            varying = _leading_columns(shown)
            shown = shown[varying]
    same = "; ".join(f"`{c}` = {format_value(df[c].iloc[0])}" for c in constant)
    hidden = [c for c in df if c not in varying and c not in constant]
    text = f"**{caption}** ({link}{how})\n\n{to_markdown(shown)}\n"
    if same:
        text += f"\nIn every row: {same}.\n"
    if hidden:
        text += (f"\n{link} has {len(hidden)} more column{'s' if len(hidden) > 1 else ''}: "
                 + ", ".join(f"`{c}`" for c in hidden) + ".\n")
    return text


def render_figure(out: Path, entry) -> str:
    """Relative PNG link with its caption underneath."""
    entry = _entry(entry)
    caption = entry["caption"]
    if not (Path(out) / entry["file"]).is_file():
        return f"*{caption}* (`{entry['file']}` is missing; re-run the stage with --force)\n"
    return f"![{caption}]({entry['file']})\n\n*Figure: {caption}*\n"


def stage_command(name: str, out: Path, quick: bool) -> str:
    return f"python run_analysis.py {name} --out {out}" + (" --quick" if quick else "")


def build_report(out: Path, meta: dict, stages=STAGE_ORDER, title: str = "CLADE efficiency analysis") -> str:
    """Markdown text of the report for the records found under ``out``."""
    out = Path(out)
    records = read_records(out, stages)
    missing = [s for s in stages if s not in records]
    quick = bool(meta.get("quick"))
    settings = recorded_settings(records)
    lines = [f"# {title}", "", *header_lines(settings, meta)]
    if missing:
        lines += ["> **Missing stages:** " + ", ".join(f"`{s}`" for s in missing)
                  + ". Run them with:", ">"]
        lines += [f"> `{stage_command(s, out, quick)}`  " for s in missing]
        lines += ["> and then `" + stage_command("report", out, quick) + " --force`.", ""]

    tables = run_tables(out)
    lines += ["## 1. Findings", "", render_findings(findings(tables))]
    lines += ["## 2. The paper's numbers beside this toolkit's", "",
              *paper_section(tables, recorded_preset(settings, meta)), ""]
    for number, (name, rec) in enumerate(records.items(), 3):
        lines += [f"## {number}. {STAGE_TITLES.get(name, name)}", "",
                  f"Stage `{name}`, {rec.get('seconds', float('nan')):.1f} s.", ""]
        lines += [f"- {note}" for note in rec.get("notes", [])]
        if rec.get("notes"):
            lines.append("")
        for entry in rec.get("tables", []):
            lines += [render_table(out, entry), ""]
        for entry in rec.get("figures", []):
            lines += [render_figure(out, entry), ""]

    lines += ["## Wall time per stage", "", "| stage | wall time (s) |", "| --- | ---: |"]
    lines += [f"| {name} | {records[name].get('seconds', float('nan')):.1f} |" if name in records
              else f"| {name} | not run |" for name in stages]
    total = sum(rec.get("seconds", 0) for rec in records.values())
    lines += [f"| **total** | **{total:.1f}** |", ""]

    lines += ["## Provenance", ""]
    lines += [f"- {label}: `{meta[key]}`" for key, label in PROVENANCE_KEYS if meta.get(key) is not None]
    lines += ["- per-table provenance (config, seed, versions, device): `tables/<name>.meta.json`", ""]
    proxies = [p for rec in records.values() for p in rec.get("proxy", [])]
    lines += ["### What is proxy", ""]
    lines += [f"- {p}" for p in proxies] or ["- Nothing recorded as proxy by the stages present."]
    lines += ["- Columns and axes whose name contains `proxy` come from networks trained by the toolkit "
              "on the run's own data; compare them between methods of this run, not with published numbers.", ""]
    return "\n".join(lines)


def run_tables(out: Path) -> dict[str, pd.DataFrame]:
    """{name: table} of the run's ``tables/<name>.csv`` that the Findings read (those present)."""
    names = (*TABLE_STAGES, "costs_per_layer", "evaluation")
    return {n: pd.read_csv(Path(out) / "tables" / f"{n}.csv") for n in names
            if (Path(out) / "tables" / f"{n}.csv").is_file()}


def paper_section(tables: dict, preset: str) -> list[str]:
    """Markdown lines: the abstract's overhead figures under every stated definition
    (``analysis.report.paper``), and SPADE's published quality beside this run's."""
    lines = ["Definitions: *extra* = everything inside the norm layers (or that minus the parameter-free "
             "BatchNorm); *denominator* = the backbone (generator without the extra) or the whole generator; "
             "computation counted as fvcore MACs, complete MACs (elementwise work too) or FLOPs. A published "
             "figure counts as reproduced when a definition gives it to the published rounding; none is tuned.", ""]
    layers = tables.get("costs_per_layer")
    try:
        comparison = paper.paper_comparison(layers, tables.get("costs")) if layers is not None else None
    except ValueError as exc:          # the costs stage counted other presets
        comparison, reason = None, str(exc)
    else:
        reason = "the costs stage did not run (tables/costs_per_layer.csv missing)"
    if comparison is None:
        lines.append(f"- Overhead figures: not compared in this run: {reason}.")
    else:
        verdicts = paper.paper_verdicts(comparison)
        lines += [f"- {'**reproduced**' if r.reproduced else '**not reproduced**'}: {r.statement}"
                  for r in verdicts.itertuples()]
    quality = paper.paper_quality_comparison(tables.get("evaluation"), preset)
    lines += ["", to_markdown(quality[["preset", "metric", "published", "measured", "note"]])]
    return lines


def write_report(out: Path, meta: dict, stages=STAGE_ORDER, **kwargs) -> Path:
    """Write ``<out>/report.md`` atomically and return its path."""
    return write_text_atomic(Path(out) / "report.md", build_report(out, meta, stages, **kwargs))
