"""The report's charts as standalone SVG, drawn here: no plotting dependency."""

from __future__ import annotations

import html
import math

import numpy as np

from hnmine.report.data import GROUPS, format_value

COLORS = {"positives": "#2e7d32", "kept": "#1565c0", "dropped": "#8d8d8d"}


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _svg(width: int, height: int, body: list[str]) -> str:
    """A standalone SVG document; width and height are set so the image has an intrinsic size."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
            f'<rect width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def svg_score_histogram(column: str, edges: np.ndarray, counts: dict[str, np.ndarray],
                        values: dict[str, np.ndarray]) -> str:
    """One panel per group on shared bins; each panel has its own height scale, since dropped
    candidates usually outnumber positives many times over."""
    left, right, top, panel, gap, bottom = 140, 16, 26, 64, 12, 34
    width = 580
    plot = width - left - right
    height = top + len(GROUPS) * (panel + gap) + bottom
    lo, hi = float(edges[0]), float(edges[-1])

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot

    body = [_text(left, 16, f"{column}", font_weight="bold", font_size="13")]
    for i, group in enumerate(GROUPS):
        y0 = top + i * (panel + gap)
        base = y0 + panel
        n = values[group].size
        label = f"{group} n={n}"
        body.append(_text(left - 10, y0 + panel / 2 - 4, label, "end", fill=COLORS[group], font_weight="bold"))
        if n:
            body.append(_text(left - 10, y0 + panel / 2 + 11, f"median {format_value(float(np.median(values[group])))}", "end"))
        peak = int(counts[group].max()) if n else 0
        for j, c in enumerate(counts[group]):
            if c:
                h = max(1.0, c / peak * (panel - 4))
                bar_width = max(x(edges[j + 1]) - x(edges[j]) - 1, 1)
                body.append(f'<rect x="{x(edges[j]) + 0.5:.1f}" y="{base - h:.1f}" width="{bar_width:.1f}" '
                            f'height="{h:.1f}" fill="{COLORS[group]}"/>')
        body.append(f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#999"/>')
        if peak:
            body.append(_text(left + plot, y0 + 10, f"max {peak}", "end", fill="#666", font_size="10"))
        else:
            body.append(_text(left + 6, base - 6, "no values", fill="#666"))
    axis = top + len(GROUPS) * (panel + gap)
    for tick in _nice_ticks(lo, hi):
        body.append(f'<line x1="{x(tick):.1f}" y1="{axis - gap}" x2="{x(tick):.1f}" y2="{axis - gap + 5}" stroke="#666"/>')
        body.append(_text(x(tick), axis + 6, f"{tick:.6g}", "middle"))
    return _svg(width, height, body)


def svg_rank_histogram(spans: list[tuple[int, int]], counts: np.ndarray) -> str:
    left, right, top, bottom, plot_h = 50, 20, 16, 40, 160
    width = 760
    plot = width - left - right
    height = top + plot_h + bottom
    base = top + plot_h
    peak = int(counts.max()) if counts.size and counts.max() else 1
    bar = min(plot / max(len(spans), 1), 40)  # a few ranks: narrow bars, not a wall
    body = [f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#999"/>',
            _text(left - 6, top + 4, str(peak), "end"), _text(left - 6, base, "0", "end")]
    label_every = max(1, math.ceil(len(spans) / 25))
    for i, ((a, b), c) in enumerate(zip(spans, counts)):
        if c:
            h = c / peak * plot_h
            body.append(f'<rect x="{left + i * bar + 1:.1f}" y="{base - h:.1f}" width="{max(bar - 2, 1):.1f}" '
                        f'height="{h:.1f}" fill="{COLORS["kept"]}"/>')
        if i % label_every == 0:
            body.append(_text(left + (i + 0.5) * bar, base + 14, str(a) if a == b else f"{a}-{b}", "middle", font_size="10"))
    body.append(_text(left + plot / 2, base + 32, "rank among the query's candidates (1 = retrieved first)", "middle"))
    return _svg(width, height, body)


def svg_drop_bars(counts: dict[str, int]) -> str:
    left, right, row, top = 170, 80, 22, 8
    width = 760
    plot = width - left - right
    height = top * 2 + max(len(counts), 1) * row
    peak = max(counts.values(), default=0) or 1
    body = []
    for i, (rule, n) in enumerate(counts.items()):
        y = top + i * row
        w = max(n / peak * plot, 1)
        body.append(_text(left - 8, y + 15, rule, "end"))
        body.append(f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" fill="{COLORS["dropped"]}"/>')
        body.append(_text(left + w + 6, y + 15, str(n)))
    if not counts:
        body.append(_text(left, top + 15, "nothing dropped"))
    return _svg(width, height, body)


def svg_calibration_curve(option: dict) -> str:
    """Share of queries full and of candidates passing against the option's value, with the
    suggested and the current value marked."""
    left, right, top, bottom, plot_h = 50, 150, 22, 40, 170
    width = 640
    plot = width - left - right
    points = sorted(option["curve"], key=lambda p: p["value"])
    values = [p["value"] for p in points]
    lo, hi = min(values), max(values)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    base = top + plot_h

    def x(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * plot

    def y(share: float) -> float:
        return base - share * plot_h

    flag = "--" + option["option"].replace("_", "-")
    body = [_text(left, 14, f"{flag} ({option['stricter']} is stricter)", font_weight="bold", font_size="13"),
            f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#999"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>']
    for share in (0, 0.5, 1):
        body.append(_text(left - 6, y(share) + 4, f"{100 * share:.0f} %", "end"))
    for tick in _nice_ticks(lo, hi):
        body.append(_text(x(tick), base + 14, f"{tick:.6g}", "middle", font_size="10"))
    body.append(_text(left + plot / 2, base + 32, f"value of {flag}", "middle"))
    for key, color, label in (("queries_full", COLORS["kept"], "queries full"),
                              ("candidates_pass", COLORS["dropped"], "candidates passing")):
        path = " ".join(f"{x(p['value']):.1f},{y(p[key]):.1f}" for p in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        body.append(_text(left + plot + 8, y(points[-1][key]) + 4 if points else top, label, fill=color))
    marks = [("suggested", option.get("suggested"), COLORS["positives"]), ("current", option.get("current"), "#e65100")]
    for i, (label, value, color) in enumerate(marks):
        if value is not None and math.isfinite(value) and lo <= value <= hi:
            body.append(f'<line x1="{x(value):.1f}" y1="{top}" x2="{x(value):.1f}" y2="{base}" stroke="{color}" '
                        f'stroke-dasharray="4 3"/>')
            body.append(_text(x(value) + 3, top + 10 + 12 * i, f"{label} {value:.4g}", fill=color, font_size="10"))
    return _svg(width, top + plot_h + bottom, body)
