"""HTML pieces of the benchmark page: escaping, tables, and the per-pass tables of a pipeline run."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from onnxslim.formatting import human_bytes, human_count

__all__ = ["esc", "pass_sections", "step_curve_svg", "step_points", "table"]


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


def _quality(step: Mapping[str, Any]) -> tuple[str, float] | None:
    """The step's task metric, else its top-1 agreement (%), else its SQNR (dB)."""
    metric = step.get("metric")
    if isinstance(metric, (int, float)) and math.isfinite(metric):
        return "task metric", float(metric)
    found = step.get("fidelity")
    fidelity: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    top1, sqnr = fidelity.get("top1_agreement"), fidelity.get("sqnr_db")
    if isinstance(top1, (int, float)) and math.isfinite(top1):
        return "top-1 agreement (%)", 100.0 * float(top1)
    if isinstance(sqnr, (int, float)) and math.isfinite(sqnr):
        return "SQNR vs teacher (dB)", float(sqnr)
    return None


def step_points(steps: Sequence[Mapping[str, Any]], x_key: str) -> tuple[str, list[tuple]]:
    """(y label, [(step, x, y)]) of the steps that have ``x_key`` and a quality figure."""
    points: list[tuple] = []
    labels: list[str] = []
    for step in steps:
        x_value, quality = step.get(x_key), _quality(step)
        if isinstance(x_value, (int, float)) and quality is not None:
            labels.append(quality[0])
            points.append((step.get("step", len(points) + 1), float(x_value), quality[1]))
    # one y quantity per chart: the most common one among the steps
    label = max(set(labels), key=labels.count) if labels else ""
    kept = [p for p, name in zip(points, labels) if name == label]
    return label, kept


def step_curve_svg(steps: Sequence[Mapping[str, Any]], x_key: str, x_label: str) -> str:
    """Quality (y) against ``x_key`` (x) across the steps of a gradual pass, one point per step
    joined in step order; empty when no step has both figures."""
    y_label, points = step_points(steps, x_key)
    if not points:
        return ""
    width, height, left, right, top, bottom = 560, 260, 60, 40, 30, 40
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    x_low, x_high = min(xs + [0.0]), max(xs) * 1.05 or 1.0
    y_low, y_high = min(ys), max(ys)
    pad = (y_high - y_low) * 0.1 or abs(y_high) * 0.05 or 1.0
    y_low, y_high = y_low - pad, y_high + pad

    def x(value: float) -> float:
        return left + (width - left - right) * (value - x_low) / ((x_high - x_low) or 1.0)

    def y(value: float) -> float:
        return height - bottom - (height - top - bottom) * (value - y_low) / (y_high - y_low)

    title = f"{y_label} vs {x_label} across steps"
    body = [
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{esc(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
        f"{esc(x_label)}</text>",
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{y_high:.3g}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end">{y_low:.3g}</text>',
    ]
    path = " ".join(f"{x(p[1]):.1f},{y(p[2]):.1f}" for p in points)
    body.append(f'<polyline class="curve" points="{path}" fill="none" stroke="#4878d0"/>')
    for number, x_value, y_value in points:
        body.append(
            f'<circle class="step" cx="{x(x_value):.1f}" cy="{y(y_value):.1f}" r="4" '
            f'fill="#4878d0"><title>step {esc(number)}: {x_value:.4g}, {y_value:.4g}</title>'
            f'</circle><text x="{x(x_value) + 6:.1f}" y="{y(y_value) - 6:.1f}">{esc(number)}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart steps" role="img" '
        f'aria-label="{esc(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        + "".join(body)
        + "</svg>"
    )


def _step_curves(summary: Mapping[str, Any]) -> list[str]:
    """The accuracy-vs-MACs and accuracy-vs-latency curves of a pass that records steps."""
    listed = summary.get("steps")  # prune_distill's step records (distill's "steps" is a count)
    steps = [s for s in listed if isinstance(s, Mapping)] if isinstance(listed, list) else []
    if not steps:
        return []
    charts = [
        step_curve_svg(steps, "macs_fraction", "fraction of the input's MACs"),
        step_curve_svg(steps, "latency_ms", "latency (ms)"),
    ]
    return [chart for chart in charts if chart]


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
        sections.extend(_step_curves(stage.get("summary") or {}))
    return (["<h2>Passes</h2>", *sections]) if sections else []
