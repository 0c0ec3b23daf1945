"""The reporting rules and what a run prints: paper protocol, last, val; the seeds table.

`summarize` applies the paper rule (the authors' selection, on the TEST set) and `last`;
`choose_on_validation` applies the val rule (choices made on the leak-free validation split);
`seed_table` is the mean +- std over seeds. Imports: util only.
"""
from __future__ import annotations

import numpy as np

from util import harmonic_mean

PAPER_RULE = ("paper protocol: best over classifier epochs and over evaluations, "
              "selected on the TEST set as the authors do")
LAST_RULE = "last: final evaluation, last classifier epoch"
VAL_RULE = ("val: training length and classifier epoch chosen on the leak-free validation split; "
            "numbers on the test split")


def fmt_eval(m: dict) -> str:
    zsl = f"ZSL T1 {m['T1']:.2f}% | " if "T1" in m else ""
    return (f"{zsl}GZSL U {m['U']:.2f}% S {m['S']:.2f}% H {m['H']:.2f}% "
            f"(last epoch: U {m['U_last']:.2f}% S {m['S_last']:.2f}% H {m['H_last']:.2f}%)")


def summarize(rows: list[dict]) -> dict:
    """Paper-protocol and last-evaluation numbers from the per-evaluation rows."""
    if not rows:
        return {}
    best_h = rows[0]
    for r in rows[1:]:
        if r["H"] > best_h["H"]:  # strict: the first evaluation with the best H, as the reference
            best_h = r
    out = {"paper": {"iteration": best_h["iteration"], "U": best_h["U"], "S": best_h["S"], "H": best_h["H"]},
           "last": {"iteration": rows[-1]["iteration"], "U": rows[-1]["U_last"], "S": rows[-1]["S_last"],
                    "H": rows[-1]["H_last"]}}
    if "T1" in rows[0]:
        best_t = max(rows, key=lambda r: r["T1"])
        out["paper"].update(T1=best_t["T1"], T1_iteration=best_t["iteration"])
        out["last"]["T1"] = rows[-1]["T1_last"]
    return out



def print_summary(log, s: dict, n_evals: int) -> None:
    log.print("")
    if not s.get("paper"):
        log.print("no evaluation ran: no iteration is a multiple of evl_interval above eval_start")
        return
    where = "VALIDATION split (leak-free, from trainval)" if s.get("split") == "validation" else "test split"
    log.print(f"=== summary over {n_evals} evaluations on the {where}, {s['wall_seconds']:.0f}s ===")
    for rule, text in (("paper", PAPER_RULE), ("last", LAST_RULE)):
        log.print(f"[{text}]")
        log.print("  " + fmt_row(s[rule]))
    if "val" in s:  # the test half of --select=val
        log.print(f"[{VAL_RULE}; validation run {s['validation_run_dir']}]")
        log.print("  " + fmt_row(s["val"]) + f", classifier epoch {s['val']['classifier_epoch']}")


def fmt_row(d: dict) -> str:
    t1 = f"ZSL T1 {d['T1']:6.2f}  " if "T1" in d else ""
    return f"{t1}GZSL U {d['U']:6.2f}  S {d['S']:6.2f}  H {d['H']:6.2f}   (iteration {d['iteration']})"



def choose_on_validation(val_rows: list[dict], val_total: int, test_rows: list[dict], test_total: int) -> dict:
    """The val rule: the (evaluation, classifier epoch) with the best validation H, carried to
    the test run at the same fraction of the training schedule; ZSL T1 likewise."""
    def best(rows, score):
        top = (-1.0, 0, 0)
        for i, r in enumerate(rows):
            for e, v in enumerate(score(r)):
                if v > top[0]:
                    top = (v, i, e)
        return top

    def at_same_fraction(i):
        frac = val_rows[i]["iteration"] / val_total
        return min(range(len(test_rows)), key=lambda j: abs(test_rows[j]["iteration"] / test_total - frac))

    _, i, e = best(val_rows, lambda r: [harmonic_mean(u, s) for u, s in r["gzsl_epochs"]])
    row = test_rows[at_same_fraction(i)]
    u, s_ = row["gzsl_epochs"][e]
    out = {"iteration": row["iteration"], "classifier_epoch": e + 1, "U": u, "S": s_, "H": harmonic_mean(u, s_),
           "val_iteration": val_rows[i]["iteration"]}
    if "zsl_epochs" in row:
        _, i, e = best(val_rows, lambda r: r["zsl_epochs"])
        out["T1"] = test_rows[at_same_fraction(i)]["zsl_epochs"][e]
    return out



def seed_table(summaries: list[dict]) -> dict:
    """{rule: {metric: (mean, std)}} over runs' summaries; sample std (ddof=1), 0 for one run."""
    table = {}
    for rule in ("paper", "last", "val"):
        if all(rule in s for s in summaries):
            table[rule] = {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                           for m in ("T1", "U", "S", "H") if all(m in s[rule] for s in summaries)
                           for v in [[s[rule][m] for s in summaries]]}
    return table


def print_seed_table(table: dict, title: str) -> None:
    rules = {"paper": PAPER_RULE, "last": LAST_RULE, "val": VAL_RULE}
    print(f"\n=== {title} ===")
    for rule, stats in table.items():
        print(f"[{rules[rule]}]")
        print("  " + "  ".join(f"{m} {mean:6.2f} +- {std:5.2f}" for m, (mean, std) in stats.items()))
