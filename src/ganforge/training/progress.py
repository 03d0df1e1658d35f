"""Progress display: a rich bar in a terminal, plain periodic lines elsewhere (pipelines, CI logs)."""

from __future__ import annotations

import sys
import time


def _fmt(stats: dict[str, float]) -> str:
    names = {"loss_d": "loss_d", "loss_g": "loss_g", "d_real": "D(x)", "d_fake": "D(G(z))"}
    return " ".join(f"{label}={stats[k]:.3f}" for k, label in names.items() if k in stats)


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Shows step, losses, D(x), D(G(z)), images/s and ETA; silent when ``enabled`` is False."""

    def __init__(self, total: int, start: int, enabled: bool, tty: bool | None = None):
        """Start the display at ``start`` of ``total`` steps.

        Args:
            total: the step at which training ends.
            start: the step training starts (or resumes) from.
            enabled: False on ranks other than 0.
            tty: force bar (True) or lines (False); None: a bar when stderr is a terminal.
        """
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )  # fmt: skip
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, stats: dict[str, float], images_per_second: float) -> None:
        """Report the state after ``step`` (called every ``--log-every`` steps)."""
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        info = f"{_fmt(stats)} {images_per_second:.0f} img/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        else:
            print(f"step {step}/{self.total} {info} eta {_eta(eta)}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop the bar (leaves the last state on screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
