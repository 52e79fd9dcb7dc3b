"""HTML pieces of the benchmark page: escaping, tables, and the per-pass tables of a pipeline run."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from onnxslim.formatting import human_bytes, human_count

__all__ = ["esc", "pass_sections", "table"]


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}">{thead}<tbody>{body}</tbody></table>'


def _stage_figures(stage: Mapping[str, Any], previous: Mapping[str, Any]) -> list[list[str]]:
    """A stage's figures against the stage before it: time, parameters, MACs, size, fidelity."""
    rows = [["time", f"{stage.get('wall_time_s', 0.0):.2f} s"]]
    for key, what, show in (
        ("parameters", "parameters", human_count),
        ("macs", "MACs", human_count),
        ("size_bytes", "file size", human_bytes),
    ):
        before, after = previous.get(key), stage.get(key)
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            rows.append([what, f"{show(before)} → {show(after)}"])
    fidelity = stage.get("fidelity")
    if isinstance(fidelity, Mapping) and fidelity.get("sqnr_db") is not None:
        sqnr = fidelity["sqnr_db"]
        sqnr_text = f"{sqnr:.1f} dB" if isinstance(sqnr, (int, float)) else str(sqnr)
        rows.append(["SQNR vs input", sqnr_text])
    return rows


def pass_sections(pipeline: Mapping[str, Any]) -> list[str]:
    """One short table per pass of a pipeline report (``Report.to_dict()``): its figures and
    the pass's own account of what it did (its registry ``describe`` hook)."""
    from onnxslim.registry import describe_summary

    stages = [s for s in pipeline.get("stages", []) if isinstance(s, Mapping)]
    sections = []
    for previous, stage in zip(stages, stages[1:]):
        name = str(stage.get("stage", "?"))
        rows = _stage_figures(stage, previous)
        story = describe_summary(name, stage.get("summary") or {})
        rows += [["what it did" if i == 0 else "", line] for i, line in enumerate(story)]
        sections.append(f"<h3>{esc(name)}</h3>")
        sections.append(table(["", ""], rows, "facts pass"))
    return (["<h2>Passes</h2>", *sections]) if sections else []
