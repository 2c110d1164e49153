"""What a sweep's seeds say: each configuration's metrics across its seeds, with 95 % intervals of their
mean, and whether it differs from the best configuration beyond seed noise.

Jobs that differ only in their seed are one configuration. Configurations share their seeds (data.seed
follows seed), so each is compared with the best one seed by seed: the mean of the paired differences,
with a 95 % Student t-interval, and a two-sided paired t-test whose p-values are Holm-corrected
across the comparisons. Student's t comes from the standard library alone (the incomplete beta
function), so the project needs no SciPy for it."""

import math
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Any


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (Numerical Recipes' betacf)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with `df` degrees of freedom."""
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: int) -> float:
    """The t with P(T ≤ t) = p (p > 0.5), by bisection on the distribution above."""
    low, high = 0.0, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if 1 - t_two_sided_p(mid, df) / 2 < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


LEVEL = 0.95
# The summary's columns that each configuration is summarised by.
METRICS = ("val_accuracy", "best_val_accuracy", "val_loss")


@dataclass
class Spread:
    """n values: their mean, standard deviation and the 95 % t-interval of the mean (None for n < 2)."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None


def spread(values: list[float]) -> Spread:
    mean = fmean(values)
    if len(values) < 2:
        return Spread(len(values), mean, None, None, None)
    sd = stdev(values)
    half = t_quantile((1 + LEVEL) / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return Spread(len(values), mean, sd, mean - half, mean + half)


def paired_p(differences: list[float]) -> float:
    """The two-sided p-value of a paired t-test that the differences' mean is 0."""
    sd = stdev(differences)
    if sd == 0:
        return 1.0 if fmean(differences) == 0 else 0.0
    return t_two_sided_p(fmean(differences) / (sd / math.sqrt(len(differences))), len(differences) - 1)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value, made comparable with the level itself."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def configurations(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration of the sweep's finished jobs (`configuration`, `seed` and the
    METRICS each), best first by mean final val_accuracy, with its spreads and, but for the best,
    its paired difference in final val_accuracy to the best, Holm-corrected."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job["status"] == "ok" and job["val_accuracy"] != "":
            grouped.setdefault(job["configuration"], []).append(job)
    rows = []
    for name, members in grouped.items():
        row: dict[str, Any] = {"configuration": name, "n": len(members), "seeds": {j["seed"]: j for j in members}}
        for metric in METRICS:
            row[metric] = spread([float(j[metric]) for j in members])
        rows.append(row)
    rows.sort(key=lambda row: -row["val_accuracy"].mean)
    if not rows:
        return rows
    best, compared = rows[0], []
    for row in rows[1:]:
        common = sorted(set(row["seeds"]) & set(best["seeds"]))
        differences = [
            float(row["seeds"][seed]["val_accuracy"]) - float(best["seeds"][seed]["val_accuracy"]) for seed in common
        ]
        row["difference"] = spread(differences) if differences else None
        if len(differences) >= 2:
            row["p"] = paired_p(differences)
            compared.append(row)
    for row, adjusted in zip(compared, holm([row["p"] for row in compared]), strict=True):
        row["p_holm"] = adjusted
    return rows


CSV_COLUMNS = (
    "configuration",
    "n",
    *(f"{metric}_{part}" for metric in METRICS for part in ("mean", "sd", "low", "high")),
    "difference_to_best",
    "difference_low",
    "difference_high",
    "p_holm",
    "beyond_noise",
)


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A configuration's row as configurations.csv holds it."""
    out: dict[str, Any] = {"configuration": row["configuration"], "n": row["n"]}
    for metric in METRICS:
        for part in ("mean", "sd", "low", "high"):
            out[f"{metric}_{part}"] = _number(getattr(row[metric], part))
    difference = row.get("difference")
    out["difference_to_best"] = _number(difference.mean if difference else None)
    out["difference_low"] = _number(difference.low if difference else None)
    out["difference_high"] = _number(difference.high if difference else None)
    out["p_holm"] = _number(row.get("p_holm"))
    out["beyond_noise"] = "" if "p_holm" not in row else "yes" if row["p_holm"] < 1 - LEVEL else "no"
    return out


def _number(value: float | None) -> Any:
    return "" if value is None else value


def markdown(rows: list[dict[str, Any]]) -> str:
    """The configurations as a table: mean ± sd [95 % interval] per metric, and against the best."""

    def cell(s: Spread) -> str:
        if s.sd is None:
            return f"{s.mean:.4f}"
        return f"{s.mean:.4f} ± {s.sd:.4f} [{s.low:.4f}, {s.high:.4f}]"

    lines = [
        "| configuration | n | val_accuracy | best_val_accuracy | val_loss | against the best (val_accuracy) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, row in enumerate(rows):
        if i == 0:
            against = "best"
        elif "p_holm" in row:
            d = row["difference"]
            verdict = "differs beyond seed noise" if row["p_holm"] < 1 - LEVEL else "within seed noise"
            against = f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], Holm p {row['p_holm']:.3g}: {verdict}"
        else:
            against = "too few shared seeds to compare"
        label = (row["configuration"] or "(the sweep's shared settings)").replace("|", "\\|")
        metrics = " | ".join(cell(row[metric]) for metric in METRICS)
        lines.append(f"| {label} | {row['n']} | {metrics} | {against} |")
    return "\n".join(lines) + "\n"
