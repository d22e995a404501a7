"""Two small chart kinds as self-contained SVG: line charts (loss curves) and grouped bars (scores).

Hand-written SVG keeps the engine free of a plotting dependency; browsers, the UI and Markdown viewers show it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 40, 50


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, title: str, x_label: str, y_label: str) -> str:
    """One polyline per series of (x, y) points; non-finite points are skipped."""
    clean = {
        name: [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)] for name, points in series.items()
    }
    clean = {name: points for name, points in clean.items() if points}
    xs = [x for points in clean.values() for x, _ in points] or [0.0, 1.0]
    ys = [y for points in clean.values() for _, y in points] or [0.0, 1.0]
    x_axis, y_axis = _Axis(min(xs), max(xs)), _Axis(min(ys), max(ys))
    body = _frame(title, x_label, y_label, x_axis, y_axis)
    for n, (name, points) in enumerate(clean.items()):
        colour = PALETTE[n % len(PALETTE)]
        coords = " ".join(f"{_px(x_axis, x):.1f},{_py(y_axis, y):.1f}" for x, y in points)
        if len(points) == 1:
            x, y = points[0]
            body.append(f'<circle cx="{_px(x_axis, x):.1f}" cy="{_py(y_axis, y):.1f}" r="3" fill="{colour}"/>')
        else:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>')
        body.append(_legend_entry(n, name, colour))
    return _svg(body)


def bar_chart(groups: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str, y_label: str) -> str:
    """Grouped bars: one group per entry of `groups`, one bar per series; None draws no bar."""
    values = [v for column in series.values() for v in column if v is not None and math.isfinite(v)]
    y_axis = _Axis(min(0.0, *values) if values else 0.0, max(1.0, *values) if values else 1.0)
    body = _frame(title, "", y_label, None, y_axis)
    slot = (WIDTH - LEFT - RIGHT) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        left = LEFT + g * slot + slot * 0.1
        body.append(_text(left + slot * 0.4, HEIGHT - BOTTOM + 18, group, anchor="middle"))
        for s, (name, column) in enumerate(series.items()):
            value = column[g] if g < len(column) else None
            if value is None or not math.isfinite(value):
                continue
            x, top, zero = left + s * bar, _py(y_axis, max(value, 0.0)), _py(y_axis, min(value, 0.0))
            colour = PALETTE[s % len(PALETTE)]
            body.append(
                f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar * 0.92:.1f}" height="{max(zero - top, 0.5):.1f}" '
                f'fill="{colour}"><title>{escape(f"{group} {name}: {value:.4g}")}</title></rect>'
            )
            body.append(_text(x + bar * 0.46, top - 4, f"{value:.2f}", anchor="middle", size=10))
    for s, name in enumerate(series):
        body.append(_legend_entry(s, name, PALETTE[s % len(PALETTE)]))
    return _svg(body)


class _Axis:
    def __init__(self, low: float, high: float) -> None:
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        self.step = _nice_step((high - low) / 5)
        self.low = math.floor(low / self.step) * self.step
        self.high = math.ceil(high / self.step) * self.step

    def ticks(self) -> list[float]:
        count = round((self.high - self.low) / self.step)
        return [self.low + i * self.step for i in range(count + 1)]


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _px(axis: _Axis, x: float) -> float:
    return LEFT + (x - axis.low) / (axis.high - axis.low) * (WIDTH - LEFT - RIGHT)


def _py(axis: _Axis, y: float) -> float:
    return HEIGHT - BOTTOM - (y - axis.low) / (axis.high - axis.low) * (HEIGHT - TOP - BOTTOM)


def _frame(title: str, x_label: str, y_label: str, x_axis: _Axis | None, y_axis: _Axis) -> list[str]:
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    body = [
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        _text(WIDTH / 2, 22, title, anchor="middle", size=15),
        f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>',
        _text(LEFT + (right - LEFT) / 2, HEIGHT - 12, x_label, anchor="middle"),
        f'<text x="16" y="{TOP + (bottom - TOP) / 2}" font-size="12" font-family="sans-serif" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + (bottom - TOP) / 2})">{escape(y_label)}</text>',
    ]
    for tick in y_axis.ticks():
        y = _py(y_axis, tick)
        body.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        body.append(_text(LEFT - 6, y + 4, f"{tick:.4g}", anchor="end", size=10))
    for tick in x_axis.ticks() if x_axis else []:
        x = _px(x_axis, tick)
        body.append(_text(x, bottom + 16, f"{tick:.4g}", anchor="middle", size=10))
    return body


def _legend_entry(n: int, name: str, colour: str) -> str:
    x, y = WIDTH - RIGHT + 14, TOP + 14 + 18 * n
    return f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{colour}"/>' + _text(x + 18, y, name, size=11)


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-family="sans-serif" '
        f'text-anchor="{anchor}">{escape(text)}</text>'
    )


def _svg(body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )
