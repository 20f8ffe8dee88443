"""The deployment report: one row per artifact (size, sparsity, accuracy, latency), plots, runs.

``write_report(data, out_dir)`` writes ``report.md`` and ``report.html`` (plots drawn with
matplotlib, embedded as base64 PNG so the HTML is one self-contained file).
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .fileio import atomic_write_text


@dataclass
class ArtifactRow:
    model: str
    name: str
    format: str
    precision: str
    size_bytes: int
    gzip_bytes: int
    sparsity: float | None = None
    accuracy: float | None = None  # artifact accuracy, percent
    reference_accuracy: float | None = None  # float Keras model accuracy, percent
    drop: float | None = None  # points
    agreement: float | None = None  # top-1 agreement with the float model, percent
    p50_ms: float | None = None
    p99_ms: float | None = None
    fps: float | None = None
    float_layers: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class RunRow:
    name: str
    artifact: str
    source: str
    frames: int
    fps: float | None
    g2g_p50_ms: float | None
    g2g_p99_ms: float | None
    skipped: int
    detail: str = ""


@dataclass
class ReportData:
    title: str
    machine: str
    artifacts: list[ArtifactRow]
    runs: list[RunRow] = field(default_factory=list)
    bundles: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    notes: list[str] = field(default_factory=list)


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def artifact_table_rows(rows: Sequence[ArtifactRow]) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "artifact", "format", "precision", "size", "gzip", "sparsity", "accuracy %",
               "drop pp", "agreement %", "p50 ms", "p99 ms", "fps", "float layers"]
    body = []
    for r in rows:
        body.append([
            r.model, r.name, r.format, r.precision, _kb(r.size_bytes), _kb(r.gzip_bytes),
            "-" if r.sparsity is None else f"{100 * r.sparsity:.0f}%",
            _fmt(r.accuracy, ".1f"), _fmt(r.drop, "+.2f"), _fmt(r.agreement, ".1f"),
            _fmt(r.p50_ms, ".3f"), _fmt(r.p99_ms, ".3f"), _fmt(r.fps, ".0f"),
            str(len(r.float_layers)) if r.float_layers else "0",
        ])
    return headers, body


def run_table_rows(rows: Sequence[RunRow]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "artifact", "source", "frames", "fps", "glass-to-glass p50 ms", "p99 ms", "skipped", "result"]
    body = [[r.name, r.artifact, r.source, str(r.frames), _fmt(r.fps, ".1f"), _fmt(r.g2g_p50_ms, ".1f"),
             _fmt(r.g2g_p99_ms, ".1f"), str(r.skipped), r.detail] for r in rows]
    return headers, body


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines)


def html_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


# ---- plots ---------------------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_accuracy_latency(rows: Sequence[ArtifactRow]) -> str | None:
    pts = [r for r in rows if r.accuracy is not None and r.p50_ms is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r in pts:
        ax.scatter(r.p50_ms, r.accuracy, s=40)
        ax.annotate(f"{r.model}/{r.name}", (r.p50_ms, r.accuracy), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if r.reference_accuracy is not None:
            ax.axhline(r.reference_accuracy, color="0.8", lw=0.8, ls="--")
    ax.set_xlabel("latency p50 (ms, batch 1)")
    ax.set_ylabel("accuracy on holdout (%)")
    ax.set_title("Accuracy against latency (dashed: float Keras model)")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_sizes(rows: Sequence[ArtifactRow]) -> str | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r.model}/{r.name}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.7 * len(rows)), 4))
    ax.bar(x - 0.2, [r.size_bytes / 1024 for r in rows], 0.4, label="raw")
    ax.bar(x + 0.2, [r.gzip_bytes / 1024 for r in rows], 0.4, label="gzip")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("KiB")
    ax.set_title("Artifact size (pruning shrinks the gzip size, not latency)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_latency_histograms(rows: Sequence[ArtifactRow]) -> str | None:
    rows = [r for r in rows if r.latencies_ms]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4))
    hi = max(np.percentile(r.latencies_ms, 99.5) for r in rows)
    bins = np.linspace(0, hi, 50)
    for r in rows:
        ax.hist(np.clip(r.latencies_ms, 0, hi), bins=bins, histtype="step", label=f"{r.model}/{r.name}")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("inferences")
    ax.set_title("Latency histograms")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


PLOTS = {
    "Accuracy against latency": plot_accuracy_latency,
    "Sizes": plot_sizes,
    "Latency histograms": plot_latency_histograms,
}


# ---- documents -----------------------------------------------------------------------------------
def render_markdown(data: ReportData) -> str:
    parts = [f"# {data.title}", "", f"Machine: {data.machine}", ""]
    parts += ["## Artifacts", "", markdown_table(*artifact_table_rows(data.artifacts)), ""]
    mixed = [r for r in data.artifacts if r.float_layers]
    for r in mixed:
        parts.append(f"- {r.model}/{r.name}: kept in float to meet the accuracy budget: {', '.join(r.float_layers)}")
    for r in data.artifacts:
        if r.note:
            parts.append(f"- {r.model}/{r.name}: {r.note}")
    if data.runs:
        parts += ["", "## Runtime on the demo videos", "", markdown_table(*run_table_rows(data.runs)), ""]
    if data.bundles:
        parts += ["", "## Bundles", ""]
        parts += [f"- `{b.get('path')}` for target `{b.get('target')}`: {_kb(b.get('size_bytes'))}, sha256 {str(b.get('sha256', ''))[:16]}…" for b in data.bundles]
    if data.timings:
        parts += ["", "## Time per step", "", markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in data.timings.items()])]
    if data.notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in data.notes]
    return "\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f5f5f5;padding:1px 4px}"""


def render_html(data: ReportData) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(data.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(data.title)}</h1><p>Machine: {esc(data.machine)}</p>",
             "<h2>Artifacts</h2>", html_table(*artifact_table_rows(data.artifacts))]
    for r in data.artifacts:
        if r.float_layers:
            parts.append(f"<p>{esc(r.model)}/{esc(r.name)}: kept in float to meet the accuracy budget: <code>{esc(', '.join(r.float_layers))}</code></p>")
        if r.note:
            parts.append(f"<p>{esc(r.model)}/{esc(r.name)}: {esc(r.note)}</p>")
    for title, fn in PLOTS.items():
        png = fn(data.artifacts)
        if png:
            parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{png}'>")
    if data.runs:
        parts += ["<h2>Runtime on the demo videos</h2>", html_table(*run_table_rows(data.runs))]
    if data.bundles:
        parts.append("<h2>Bundles</h2><ul>" + "".join(
            f"<li><code>{esc(str(b.get('path')))}</code> for <b>{esc(str(b.get('target')))}</b>: {_kb(b.get('size_bytes'))}</li>" for b in data.bundles) + "</ul>")
    if data.timings:
        parts += ["<h2>Time per step</h2>", html_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in data.timings.items()])]
    if data.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in data.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data: ReportData, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write report.md and report.html atomically into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    md = atomic_write_text(out / "report.md", render_markdown(data))
    ht = atomic_write_text(out / "report.html", render_html(data))
    return md, ht


def machine_description() -> str:
    """CPU model, cores, OS, architecture and Python, from :func:`edgeship.runtime.bench.machine_info`."""
    import platform

    from .runtime.bench import machine_info

    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores, {platform.system()} {m['arch']}, Python {m['python']}"


def to_dict(data: ReportData) -> dict[str, Any]:
    d = asdict(data)
    for a in d["artifacts"]:
        a.pop("latencies_ms", None)
    return d
