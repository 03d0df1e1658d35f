"""The registration gate: register a generator only when its FID and its audit are good enough."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GateDecision:
    """Whether to register, and every reason not to (empty when it passes)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the pipeline's outputs and logs."""
        return "passed: FID and audit within limits" if self.passed else "not registered: " + "; ".join(self.reasons)


def decide(fid: float, max_fid: float, audit_verdict: str, audit_reasons: list[str] | None = None) -> GateDecision:
    """Apply the gate: FID at most ``max_fid`` and an audit verdict of ``pass``.

    Args:
        fid: the evaluated FID (lower is better); NaN never passes.
        max_fid: the largest FID that may be registered.
        audit_verdict: ``pass`` or ``fail`` from the memorisation audit.
        audit_reasons: the audit's own reasons for failing, quoted in the decision.
    """
    reasons = []
    if not (math.isfinite(max_fid) and max_fid > 0):  # `fid > nan` is False: a NaN limit would pass everything
        reasons.append(f"max_fid {max_fid!r} is not a finite positive limit")
    elif math.isnan(fid) or fid > max_fid:
        reasons.append(f"FID {fid:.2f} is above max_fid {max_fid:g}")
    if audit_verdict != "pass":
        why = "; ".join(audit_reasons or []) or "no reason given"
        reasons.append(f"memorisation audit verdict {audit_verdict!r} ({why})")
    return GateDecision(not reasons, reasons)
