"""``BenchmarkResult``: the result records of one benchmark run with their reports (JSON, HTML,
Markdown); the JSON schema is documented in :mod:`onnxslim.benchmark._records`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from onnxslim.benchmark._records import ResultRecord
from onnxslim.benchmark._report import html_report, markdown_report

__all__ = ["BenchmarkResult"]


@dataclasses.dataclass
class BenchmarkResult(ResultRecord):
    """All measurements of one benchmark run, with the machine and settings they were taken on."""

    def to_markdown(self) -> str:
        return markdown_report(self)

    def to_html(self, title: str = "onnxslim benchmark", pipeline: dict | None = None) -> str:
        """The HTML page; ``pipeline`` (``Report.to_dict()``) adds a short table per pass."""
        return html_report(self, title=title, pipeline=pipeline)

    def write(
        self,
        json_path: str | os.PathLike | None = None,
        html_path: str | os.PathLike | None = None,
        markdown_path: str | os.PathLike | None = None,
        pipeline: dict | None = None,
    ) -> list[Path]:
        """Writes the reports asked for; returns their paths (``pipeline``: see ``to_html``)."""
        written = []
        for path, render in (
            (json_path, self.to_json),
            (html_path, lambda: self.to_html(pipeline=pipeline)),
            (markdown_path, self.to_markdown),
        ):
            if path is not None:
                Path(path).write_text(
                    render() + ("\n" if render is self.to_json else ""), encoding="utf-8"
                )
                written.append(Path(path))
        return written
