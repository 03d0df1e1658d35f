"""Training's progress display: a rich bar in a terminal, plain lines elsewhere (pipelines, CI logs).

The mode (bar, plain, off: ``GANFORGE_PROGRESS``, rank) and the bar are ``ganforge.progress``'s; what
is training's own is the content: step, losses, D(x), D(G(z)), images/s. Plain lines follow the shared
cadence: the first update, then at most one every ``GANFORGE_PROGRESS_INTERVAL`` seconds (10), and the
last step, whatever ``--log-every`` is (a tiny model logs many times a second).
"""

from __future__ import annotations

import sys
import time

from ganforge.progress import Bar, fmt_duration, plain_interval, progress_mode


def _fmt(stats: dict[str, float]) -> str:
    names = {"loss_d": "loss_d", "loss_g": "loss_g", "d_real": "D(x)", "d_fake": "D(G(z))"}
    return " ".join(f"{label}={stats[k]:.3f}" for k, label in names.items() if k in stats)


class Progress:
    """Shows step, losses, D(x), D(G(z)), images/s and ETA; silent when ``enabled`` is False."""

    def __init__(self, total: int, start: int, enabled: bool, tty: bool | None = None):
        """Start the display at ``start`` of ``total`` steps.

        Args:
            total: the step at which training ends.
            start: the step training starts (or resumes) from.
            enabled: False on ranks other than 0.
            tty: force bar (True) or lines (False); None: ``GANFORGE_PROGRESS``, else a bar when stderr
                is a terminal.
        """
        self.total, self.start = total, start
        self.mode = progress_mode(tty, enabled)
        self.enabled = self.mode != "off"
        self.t0 = time.perf_counter()
        self._bar = Bar("train", total, "step", done=start, tty=True) if self.mode == "bar" else None
        self.interval = plain_interval()
        self._last_line: float | None = None

    def update(self, step: int, stats: dict[str, float], images_per_second: float) -> None:
        """Report the state after ``step`` (called every ``--log-every`` steps)."""
        if not self.enabled:
            return
        info = f"{_fmt(stats)} {images_per_second:.0f} img/s"
        if self._bar is not None:
            self._bar.update(step, info=info)
            return
        now = time.perf_counter()
        if self._last_line is not None and now - self._last_line < self.interval and step < self.total:
            return
        self._last_line = now
        done = step - self.start
        elapsed = now - self.t0
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        print(f"step {step}/{self.total} {info} eta {fmt_duration(eta)}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.message(text)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop the bar (leaves the last state on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
