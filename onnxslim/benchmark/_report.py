"""Markdown table and a self-contained HTML page (inline SVG charts, no script, opens offline)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxslim.benchmark._passes_html import esc as _esc
from onnxslim.benchmark._passes_html import pass_sections
from onnxslim.benchmark._passes_html import table as _table
from onnxslim.benchmark._records import Measurement, ResultRecord

__all__ = ["markdown_report", "html_report", "measurement_rows", "pass_sections"]

_PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
_COLUMNS = [
    "model",
    "provider",
    "batch",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "mean ± std ms",
    "min ms",
    "samples/s",
    "× ref latency",
    "size MB",
    "session s",
    "mem MB",
    "SQNR dB",
    "top-1",
    "max |Δ|",
    "int8 MACs",
]


def _short_provider(provider: str) -> str:
    return provider.removesuffix("ExecutionProvider")


def _mb(value: int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.2f}"


def _sqnr_text(measurement: Measurement) -> str:
    if measurement.fidelity is None:
        return "–"
    value = measurement.fidelity.sqnr_db
    return "∞" if math.isinf(value) and value > 0 else f"{value:.1f}"


def measurement_rows(result: ResultRecord) -> list[list[str]]:
    """One row of text per measurement, columns as in the Markdown table."""
    rows = []
    for m in result.measurements:
        ratio = (
            "ref"
            if m.latency_ratio is None
            else (
                f"{m.latency_ratio.median:.3f} [{m.latency_ratio.p10:.2f}–{m.latency_ratio.p90:.2f}]"
            )
        )
        size = _mb(m.file_size_bytes) + ("" if m.size_ratio is None else f" ({m.size_ratio:.2f}×)")
        memory = _mb(m.session_memory_bytes)
        if m.gpu_memory_bytes is not None:
            memory += f" / GPU {_mb(m.gpu_memory_bytes)}"
        top1 = "–"
        if m.fidelity is not None and m.fidelity.top1_agreement is not None:
            top1 = f"{100 * m.fidelity.top1_agreement:.1f}%"
        max_abs = "–" if m.fidelity is None else f"{m.fidelity.max_abs_error:.3g}"
        coverage = "–" if m.coverage is None else m.coverage.describe()
        rows.append(
            [
                m.model,
                _short_provider(m.provider) + (" (IOBinding)" if m.io_binding else ""),
                str(m.batch),
                f"{m.latency.p50_ms:.3f}",
                f"{m.latency.p90_ms:.3f}",
                f"{m.latency.p99_ms:.3f}",
                f"{m.latency.mean_ms:.3f} ± {m.latency.std_ms:.3f}",
                f"{m.latency.min_ms:.3f}",
                f"{m.throughput_per_s:.1f}",
                ratio,
                size,
                f"{m.session_create_s:.3f}",
                memory,
                _sqnr_text(m),
                top1,
                max_abs,
                coverage,
            ]
        )
    return rows


def _context_lines(result: ResultRecord) -> list[str]:
    settings = result.settings
    runs = (
        f"{settings['runs']} timed rounds"
        if settings.get("runs")
        else f"time budget {settings.get('time_budget_s')} s"
    )
    threads = f"intra-op threads {settings.get('intra_op_threads') or 'ORT default'}"
    return [
        f"Machine: {result.machine.describe()}",
        f"Reference: {result.reference}; {settings.get('warmup_runs')} warm-up runs, {runs}, "
        f"{threads}, graph optimization '{settings.get('optimization_level')}', "
        f"inputs {settings.get('inputs')}.",
        *[note[0].upper() + note[1:] + "." for note in settings.get("notes", [])],
    ]


def markdown_report(result: ResultRecord) -> str:
    """A Markdown table of all measurements, preceded by the machine and method."""
    lines = [f"- {line}" for line in _context_lines(result)]
    header = [column.replace("|", "\\|") for column in _COLUMNS]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in measurement_rows(result):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- SVG charts


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < high:  # the last tick bounds every value
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11">' + "".join(body) + "</svg>"
    )


def _groups(result: ResultRecord) -> list[tuple[str, int, list[Measurement]]]:
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in result.measurements:
        groups.setdefault((m.provider, m.batch), []).append(m)
    return [(provider, batch, items) for (provider, batch), items in groups.items()]


def _color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def latency_distribution_svg(measurements: Sequence[Measurement], title: str) -> str:
    """Box plot per model (p25–p75 box, p50 line, min–p99 whiskers) over every run as a dot."""
    left, right, row_height, top = 150, 30, 34, 28
    width = 720
    height = top + row_height * len(measurements) + 34
    values = [v for m in measurements for v in m.latencies_ms]
    ticks = _nice_ticks(0.0, max(values) if values else 1.0)
    span = ticks[-1] or 1.0

    def x(value: float) -> float:
        return left + (width - left - right) * value / span

    body = [f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    axis_y = top + row_height * len(measurements)
    for tick in ticks:
        body.append(
            f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{axis_y}" stroke="#e3e3e3"/>'
        )
        body.append(
            f'<text x="{x(tick):.1f}" y="{axis_y + 14}" text-anchor="middle">{tick:g}</text>'
        )
    body.append(
        f'<text x="{(left + width - right) / 2}" y="{axis_y + 28}" text-anchor="middle">latency (ms)</text>'
    )
    rng = np.random.default_rng(0)
    for row, m in enumerate(measurements):
        center = top + row_height * row + row_height / 2
        color = _color(row)
        samples = np.asarray(m.latencies_ms)
        q25, q50, q75 = np.percentile(samples, [25, 50, 75])
        body.append(
            f'<text x="{left - 8}" y="{center + 4:.1f}" text-anchor="end">{_esc(m.model)}</text>'
        )
        body.append(
            f'<line class="whisker" x1="{x(m.latency.min_ms):.1f}" y1="{center:.1f}" x2="{x(m.latency.p99_ms):.1f}" '
            f'y2="{center:.1f}" stroke="{color}"/>'
        )
        for jitter, value in zip(rng.uniform(-8, 8, samples.size), samples):
            body.append(
                f'<circle cx="{x(value):.1f}" cy="{center + jitter:.1f}" r="1.6" fill="{color}" fill-opacity="0.35"/>'
            )
        body.append(
            f'<rect class="box" x="{x(q25):.1f}" y="{center - 9:.1f}" width="{max(1.0, x(q75) - x(q25)):.1f}" '
            f'height="18" fill="{color}" fill-opacity="0.25" stroke="{color}"><title>{_esc(m.model)}: '
            f"p50 {q50:.3f} ms, p90 {m.latency.p90_ms:.3f} ms, p99 {m.latency.p99_ms:.3f} ms</title></rect>"
        )
        body.append(
            f'<line x1="{x(q50):.1f}" y1="{center - 9:.1f}" x2="{x(q50):.1f}" y2="{center + 9:.1f}" '
            f'stroke="{color}" stroke-width="2.5"/>'
        )
    return _svg(width, height, body, title)


def _bar_panel(
    names: Sequence[str],
    values: Sequence[float | None],
    title: str,
    unit: str,
    x0: int,
    width: int,
    row_height: int,
    top: int,
) -> list[str]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    high = max(finite) if finite else 1.0
    high = high if high > 0 else 1.0
    label_width = 90
    bar_space = width - label_width - 50
    body = [f'<text x="{x0}" y="{top - 10}" font-weight="bold">{_esc(title)}</text>']
    for row, (name, value) in enumerate(zip(names, values)):
        y = top + row * row_height
        body.append(
            f'<text x="{x0 + label_width - 6}" y="{y + 13}" text-anchor="end">{_esc(name)[:14]}</text>'
        )
        if value is None:
            body.append(f'<text x="{x0 + label_width}" y="{y + 13}" fill="#888">n/a</text>')
            continue
        infinite = not math.isfinite(value)
        length = bar_space if infinite else bar_space * max(0.0, value) / high
        text = "∞" if infinite else f"{value:.3g}{unit}"
        opacity = "0.4" if infinite else "1"
        body.append(
            f'<rect class="bar" x="{x0 + label_width}" y="{y + 2}" width="{length:.1f}" height="{row_height - 6}" '
            f'fill="{_color(row)}" fill-opacity="{opacity}"/>'
        )
        body.append(f'<text x="{x0 + label_width + length + 4:.1f}" y="{y + 13}">{text}</text>')
    return body


def side_by_side_svg(measurements: Sequence[Measurement], title: str) -> str:
    """File size, p50 latency and SQNR of each model, as three bar panels in one figure."""
    names = [m.model for m in measurements]
    row_height, top = 22, 46
    panel = 240
    height = top + row_height * len(measurements) + 12
    body = [f'<text x="0" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    body += _bar_panel(
        names,
        [m.file_size_bytes / 1e6 for m in measurements],
        "file size (MB)",
        "",
        0,
        panel,
        row_height,
        top,
    )
    body += _bar_panel(
        names,
        [m.latency.p50_ms for m in measurements],
        "p50 latency (ms)",
        "",
        panel,
        panel,
        row_height,
        top,
    )
    body += _bar_panel(
        names,
        [m.fidelity.sqnr_db if m.fidelity else None for m in measurements],
        "SQNR vs reference (dB)",
        "",
        2 * panel,
        panel,
        row_height,
        top,
    )
    return _svg(3 * panel, height, body, title)


def tradeoff_svg(measurements: Sequence[Measurement], title: str) -> str:
    """SQNR (y) against p50 latency (x), points joined in model order (pipeline stages)."""
    width, height, left, right, top, bottom = 720, 300, 60, 130, 30, 40
    finite = [
        m.fidelity.sqnr_db
        for m in measurements
        if m.fidelity is not None and math.isfinite(m.fidelity.sqnr_db)
    ]
    ceiling = (
        (max(finite) + 10.0) if finite else 60.0
    )  # where "identical to the reference" (∞ dB) is drawn
    points = []
    for m in measurements:
        if m.fidelity is None:
            continue
        sqnr = m.fidelity.sqnr_db
        points.append(
            (
                m,
                m.latency.p50_ms,
                ceiling if not math.isfinite(sqnr) or sqnr > ceiling else sqnr,
                sqnr,
            )
        )
    x_ticks = _nice_ticks(0.0, max((p[1] for p in points), default=1.0) * 1.1)
    y_low = min((p[2] for p in points), default=0.0)
    y_ticks = _nice_ticks(min(0.0, y_low), ceiling)

    def x(value: float) -> float:
        return left + (width - left - right) * (value - x_ticks[0]) / (
            (x_ticks[-1] - x_ticks[0]) or 1.0
        )

    def y(value: float) -> float:
        return (
            height
            - bottom
            - (height - top - bottom) * (value - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0)
        )

    body = [f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    for tick in x_ticks:
        body.append(
            f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{height - bottom}" stroke="#e3e3e3"/>'
        )
        body.append(
            f'<text x="{x(tick):.1f}" y="{height - bottom + 14}" text-anchor="middle">{tick:g}</text>'
        )
    for tick in y_ticks:
        body.append(
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - right}" y2="{y(tick):.1f}" stroke="#e3e3e3"/>'
        )
        body.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    body.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">p50 latency (ms)</text>'
    )
    body.append(
        f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2})">SQNR vs reference (dB)</text>'
    )
    if len(points) > 1:
        path = " ".join(f"{x(p[1]):.1f},{y(p[2]):.1f}" for p in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    for index, (m, latency, plotted, sqnr) in enumerate(points):
        sqnr_text = "∞ (identical)" if not math.isfinite(sqnr) else f"{sqnr:.1f} dB"
        body.append(
            f'<circle class="point" cx="{x(latency):.1f}" cy="{y(plotted):.1f}" r="5" fill="{_color(index)}">'
            f"<title>{_esc(m.model)}: {latency:.3f} ms, {sqnr_text}</title></circle>"
        )
        body.append(
            f'<text x="{x(latency) + 8:.1f}" y="{y(plotted) + 4:.1f}">{_esc(m.model)} ({sqnr_text})</text>'
        )
    return _svg(width, height, body, title)


_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.chart{display:block;margin:12px 0 24px}
.facts td{text-align:left}
"""


def html_report(
    result: ResultRecord,
    title: str = "onnxslim benchmark",
    pipeline: Mapping[str, Any] | None = None,
) -> str:
    """A single HTML file: context, charts per provider x batch, tables. No script, no external URL.

    ``pipeline``: the report of the pipeline run that made the models (``Report.to_dict()``):
    a short table per pass goes next to the charts.
    """
    machine = result.machine
    facts = [
        ["CPU", f"{machine.cpu_model} ({machine.logical_cpus} logical CPUs)"],
        ["int8 instruction sets", ", ".join(machine.int8_isa) or "none detected"],
        [
            "GPU",
            "; ".join(
                f"{g.name} ({g.memory_total_mib} MiB, driver {g.driver})" for g in machine.gpus
            )
            or "none",
        ],
        [
            "onnxruntime",
            f"{machine.onnxruntime_version}; providers: {', '.join(machine.available_providers)}",
        ],
        ["platform", f"{machine.platform}, Python {machine.python}"],
    ]
    sections = [
        f"<h1>{_esc(title)}</h1>",
        "<h2>Machine and method</h2>",
        _table(["", ""], facts, "facts"),
    ]
    sections.append(
        "<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in _context_lines(result)[1:]) + "</ul>"
    )
    sections += pass_sections(pipeline or {})
    sections.append("<h2>Charts</h2>")
    for provider, batch, items in _groups(result):
        group = f"{_short_provider(provider)}, batch {batch}"
        sections.append(f"<h3>{_esc(group)}</h3>")
        sections.append(latency_distribution_svg(items, f"Latency per run — {group}"))
        sections.append(side_by_side_svg(items, f"Size, latency and fidelity — {group}"))
        sections.append(tradeoff_svg(items, f"Accuracy vs latency across models — {group}"))
    sections.append("<h2>Measurements</h2>")
    sections.append(_table(_COLUMNS, measurement_rows(result)))
    coverage_rows = [
        [
            m.model,
            _short_provider(m.provider),
            m.coverage.verdict,
            "–" if m.coverage.integer_share is None else f"{100 * m.coverage.integer_share:.1f}%",
            f"{m.coverage.integer_macs:,}",
            f"{m.coverage.float_macs:,}",
            f"{m.coverage.fake_quant_macs:,}",
            ", ".join(f"{op} {macs:,}" for op, macs in sorted(m.coverage.macs_per_kernel.items())),
            m.coverage.note or "",
        ]
        for m in result.measurements
        if m.coverage is not None and m.batch == result.measurements[0].batch
    ]
    if coverage_rows:
        sections.append("<h2>What runs in int8 (after ORT graph optimization)</h2>")
        sections.append(
            _table(
                [
                    "model",
                    "provider",
                    "verdict",
                    "int8 share",
                    "int MACs",
                    "float MACs",
                    "fake-quant MACs",
                    "MACs per kernel",
                    "note",
                ],
                coverage_rows,
            )
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(sections)
        + f"<p><small>{_esc(result.tool)}, JSON schema version 1</small></p></body></html>\n"
    )
