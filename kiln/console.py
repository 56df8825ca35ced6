"""Output that knows where it runs: a terminal (rich, colour), GitHub Actions (fold markers and a
step summary), or a plain log. ``Console`` is built once at the CLI edge from the environment.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich import box
from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

__all__ = ["Console", "Progress", "Style"]


@dataclass(frozen=True)
class Style:
    """How a column is shown on a terminal: rich style per cell value, and alignment."""

    colours: Mapping[str, str]
    justify: str = "left"


class Progress:
    """Progress of a known number of steps: a live bar on a terminal, silent elsewhere (plain
    logs and GitHub Actions get the lines the caller prints with ``line``). Thread-safe."""

    def __init__(self, console: Console, bar: RichProgress | None, total: int,
                 title: str) -> None:
        self._console = console
        self._bar = bar
        self._lock = threading.Lock()
        self._task = bar.add_task(title, total=total) if bar is not None else None

    def advance(self, steps: int = 1) -> None:
        with self._lock:
            if self._bar is not None and self._task is not None:
                self._bar.advance(self._task, steps)

    def describe(self, text: str) -> None:
        with self._lock:
            if self._bar is not None and self._task is not None:
                self._bar.update(self._task, description=text)

    def line(self, text: str) -> None:
        """A line of output: above the bar on a terminal, a plain line elsewhere."""
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(text, markup=False, highlight=False)
            else:
                self._console.line(text)


class Console:
    def __init__(self, *, stream: TextIO | None = None, terminal: bool | None = None,
                 github_actions: bool = False, step_summary: Path | None = None,
                 no_color: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.github = github_actions
        self.step_summary = step_summary
        self._rich = RichConsole(file=self.stream, force_terminal=self.terminal,
                                 no_color=no_color or not self.terminal, highlight=False,
                                 soft_wrap=False, width=200 if not self.terminal else None)

    @classmethod
    def from_env(cls, env: Mapping[str, str], stream: TextIO | None = None) -> Console:
        summary = env.get("GITHUB_STEP_SUMMARY")
        return cls(stream=stream, github_actions=env.get("GITHUB_ACTIONS") == "true",
                   step_summary=Path(summary) if summary else None,
                   no_color="NO_COLOR" in env)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def note(self, text: str) -> None:
        if self.terminal:
            self._rich.print(f"[dim]{text}[/dim]")
        else:
            self.line(text)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A foldable group on GitHub Actions; a heading elsewhere."""
        if self.github:
            self.line(f"::group::{title}")
        elif self.terminal:
            self._rich.rule(title)
        else:
            self.line(f"== {title}")
        try:
            yield
        finally:
            if self.github:
                self.line("::endgroup::")

    @contextmanager
    def progress(self, title: str, total: int) -> Iterator[Progress]:
        """A progress bar for ``total`` steps on a terminal (transient); nothing elsewhere."""
        if not self.terminal:
            yield Progress(self, None, total, title)
            return
        bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), console=self._rich, transient=True)
        with bar:
            yield Progress(self, bar, total, title)

    def table(self, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]],
              styles: Mapping[str, Style] | None = None, caption: str | None = None,
              sections: Sequence[int] = (), dim_rows: Sequence[int] = ()) -> None:
        """A table: coloured, with a rule after each row index in ``sections``, on a terminal;
        aligned plain text elsewhere; also a Markdown table in the GitHub step summary."""
        styles = styles or {}
        if self.terminal:
            t = Table(title=title, caption=caption, header_style="bold", title_justify="left",
                      caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                      title_style="bold")
            for i, h in enumerate(headers):
                st = styles.get(h)
                t.add_column(h, justify="right" if st and st.justify == "right" else "left",
                             no_wrap=i == 0, overflow="fold")
            for index, row in enumerate(rows):
                cells = []
                for h, cell in zip(headers, row, strict=True):
                    st = styles.get(h)
                    colour = None
                    if st is not None:
                        colour = next((c for k, c in st.colours.items() if cell.startswith(k)),
                                      None)
                    cells.append(f"[{colour}]{cell}[/{colour}]" if colour else cell)
                t.add_row(*cells, end_section=index in sections,
                          style="dim" if index in dim_rows else None)
            self._rich.print(t)
        else:
            if title:
                self.line(title)
            widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                      for i, h in enumerate(headers)]
            self.line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
                      .rstrip())
            self.line("  ".join("-" * w for w in widths))
            for row in rows:
                self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                          .rstrip())
            if caption:
                self.line(caption)
        if self.step_summary is not None:
            self.write_summary(title, headers, rows)

    def write_summary(self, title: str | None, headers: Sequence[str],
                      rows: Sequence[Sequence[str]]) -> None:
        assert self.step_summary is not None
        lines = []
        if title:
            lines.append(f"### {title}\n")
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        lines.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
        with self.step_summary.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n\n")
