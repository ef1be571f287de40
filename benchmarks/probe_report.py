"""What the probes (dark_probe, envelope_probe, phase_probe) share: rounded rows, per-group means,
and one JSON report with the command that made it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def rounded(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its floats to 4 decimals, as the reports store them."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def record_variant(rows: list[dict[str, Any]], reference: np.ndarray, estimate: np.ndarray, rate: int,
                   degraded: np.ndarray, *, excerpt: str, kbps: int, variant: str, **fields: Any) -> None:
    """Appends one variant of one excerpt to `rows`: its fields with apollo evaluate's metrics and
    diagnostics (evaluate.score_restoration), rounded as the reports store them; and prints its
    progress line (the track, the bitrate, the variant, its ViSQOL and hop comb)."""
    from apollo.evaluate import score_restoration

    row = rounded({"excerpt": excerpt, "kbps": kbps, "variant": variant, **fields,
                   **score_restoration(reference, estimate, rate, degraded)})
    rows.append(row)
    print(excerpt.split("/")[-3], kbps, variant, f"visqol={row['visqol']:.3f}", f"comb={row['hop_comb']:.2f}",
          flush=True)


def summarise(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], str],
              keys: Iterable[str]) -> dict[str, dict[str, float]]:
    """Mean of each key over the rows of each group (3 decimals), groups in first-seen order; a key
    is averaged over the rows that have it and left out of a group where none has it."""
    return {name: {k: round(float(np.mean([r[k] for r in chosen if k in r])), 3)
                   for k in keys if any(k in r for r in chosen)}
            for name, chosen in _grouped(rows, group).items()}


def _grouped(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], str]) -> dict[str, list[dict[str, Any]]]:
    """The rows by their group's name, groups in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group(row), []).append(row)
    return groups


def standard_errors(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], str],
                    keys: Iterable[str]) -> dict[str, dict[str, float]]:
    """The standard error of each mean `summarise` gives (sample deviation / sqrt(n), 3 decimals),
    where a group has at least two rows with the key (groups with none are left out): how far two
    groups' means may differ by chance."""
    out: dict[str, dict[str, float]] = {}
    for name, chosen in _grouped(rows, group).items():
        values = {k: [r[k] for r in chosen if k in r] for k in keys}
        errors = {k: round(float(np.std(v, ddof=1) / np.sqrt(len(v))), 3) for k, v in values.items() if len(v) > 1}
        if errors:
            out[name] = errors
    return out


def write_report(path: str, command: str, rows: list[dict[str, Any]], summary: dict[str, dict[str, float]],
                 **extra: Any) -> None:
    """Writes {command, excerpts, summary, **extra, rows} as JSON and prints the summary."""
    with open(path, "w") as handle:
        json.dump({"command": command, "excerpts": len({r["excerpt"] for r in rows}), "summary": summary,
                   **extra, "rows": rows}, handle, indent=1)
    for key, values in summary.items():
        print(key, values)
