"""Bar charts as inline SVG, made here (no charting library, no script, no external request).

A chart is a list of bars, each with a label, a value and optionally the value it is compared
with (the previous release): the bar shows the value, a dark tick marks the compared value, and
the text beside it gives the value and the change. Labels sit above their bars so the chart
stays readable when the page is 360 px wide. Every chart has a ``<title>`` and a ``<desc>``
(and the page shows the same numbers in a table), so it is not the only way to read them.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bar", "bar_chart"]

_WIDTH = 480
_ROW = 38  # label line + bar
_BAR = 14
_TEXT_AREA = 150  # right of the bars: the value and the change


@dataclass(frozen=True, kw_only=True)
class Bar:
    label: str
    value: float
    compared: float | None = None  # e.g. the previous release's value
    tone: str = "now"  # css class suffix: now | up | down | new


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def bar_chart(bars: Sequence[Bar], *, chart_id: str, title: str, desc: str,
              fmt: Callable[[float], str], change: Callable[[float, float], str] | None = None,
              reference: float | None = None, reference_label: str = "") -> str:
    """An SVG bar chart of ``bars``. ``fmt`` writes a value; ``change`` writes the change from
    the compared value (omitted when a bar has none). ``reference`` draws a vertical line at
    that value (e.g. 1.0 for ratios) labelled ``reference_label``."""
    top = 28 if reference is not None else 8
    height = top + _ROW * len(bars) + 8
    scale_max = max([b.value for b in bars] + [b.compared or 0.0 for b in bars]
                    + [reference or 0.0] + [1e-9])
    span = _WIDTH - _TEXT_AREA - 8

    def x(v: float) -> float:
        return 4 + span * max(v, 0.0) / scale_max

    parts = [
        f'<svg class="chart" id="{_esc(chart_id)}" viewBox="0 0 {_WIDTH} {height}" '
        f'role="img" aria-labelledby="{_esc(chart_id)}-t {_esc(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_esc(chart_id)}-t">{_esc(title)}</title>',
        f'<desc id="{_esc(chart_id)}-d">{_esc(desc)}</desc>',
    ]
    if reference is not None:
        rx = x(reference)
        parts.append(f'<line class="ref" x1="{rx:.1f}" y1="18" x2="{rx:.1f}" '
                     f'y2="{height - 4}"/>')
        parts.append(f'<text class="ref-label" x="{rx:.1f}" y="13" text-anchor="middle">'
                     f'{_esc(reference_label)}</text>')
    for i, b in enumerate(bars):
        y = top + i * _ROW
        parts.append(f'<text class="label" x="4" y="{y + 12}">{_esc(b.label)}</text>')
        w = max(x(b.value) - 4, 1.0)
        parts.append(f'<rect class="bar {_esc(b.tone)}" x="4" y="{y + 17}" width="{w:.1f}" '
                     f'height="{_BAR}" rx="2"/>')
        if b.compared is not None:
            cx = x(b.compared)
            parts.append(f'<line class="was" x1="{cx:.1f}" y1="{y + 14}" x2="{cx:.1f}" '
                         f'y2="{y + 17 + _BAR + 3}"/>')
        text = fmt(b.value)
        if b.compared is not None and change is not None:
            text += f" ({change(b.value, b.compared)})"
        parts.append(f'<text class="value" x="{_WIDTH - _TEXT_AREA + 4}" y="{y + 28}">'
                     f'{_esc(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
