"""Expected time of each dataset's faithful run: measured where a full run was timed, else projected.

    python -m bench.expected_time                              # from bench/results-cpu.json
    python -m bench.expected_time --results=bench/results-cuda.json   # a GPU's unit times

`python -m bench.bench` measures, at AWA2's shapes, one flow iteration, synthesis per row and one
classifier epoch on one device, and projects the full AWA2 protocol there (measured unit times x
counts) and on one H200 (counted FLOPs and bytes at peak rates, never less than an assumed host
time: a model, never checked against a GPU run). This script scales those AWA2 figures to each
dataset's own schedule (its train_<DATASET>.py and the benchmark's counts): the PROJECTED column
is the results file's device, the H200 column the model. Next to them, the MEASURED column shows
the wall time of a faithful full-size run where `python -m bench.full_run` recorded one
(<measured>/full-<DATASET>-*.json, fp32 defaults), with its device, date and commit. The scaling
(bench/README.md):

- flow training: per iteration, x K (coupling blocks) and x (batch + seen classes) (the batch's
  forward/backward plus the prototype pass over the seen classes); on the H200, whose flow step is
  bound by the host's launches, x K only;
- synthesis: per synthetic row, x K;
- classifier: per row and epoch as AWA2's (its 50 and 10 classes); on the H200 per batch.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.expected_time", file=sys.stderr)
    raise SystemExit(2)

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
from benchmarks import BENCHMARKS  # noqa: E402
from cli import opt  # noqa: E402


@dataclass
class ExpectedOptions:
    results: str = opt("bench/results-cpu.json", "a result file of python -m bench.bench (--quick ones scale "
                                                 "small synthesis and classifier sizes up)", path=True)
    precision: str = opt("fp32", "the H200 projection's precision: fp32 | tf32 | bf16 | 'fp32 --device_noise'")
    measured: str = opt("bench/gpu", "folder of bench.full_run records (full-<DATASET>-*.json)", path=True)


def workload(name: str) -> dict:
    b = BENCHMARKS[name]
    c = importlib.import_module(f"train_{name}").config
    synthetic = b.unseen * c.nSample
    return dict(iterations=c.total_iterations(b.trainval), evaluations=len(c.evaluations(b.trainval)),
                synthetic=synthetic, gzsl_rows=b.trainval + synthetic, blocks=c.num_coupling_layers,
                batch=c.batchsize, seen=b.seen, epochs=c.classifier_epochs, classifier_batch=c.classifier_batch)


def project(res: dict, w: dict, ref: dict, precision: str = "fp32") -> dict:
    """Seconds per part for workload `w`, from a bench result measured at workload `ref` (AWA2)."""
    st, proj = res["stages"], res["projection"]
    tr, ev = st["train"]["fp32"], st["eval"]
    per_iter = tr["time"] * (w["blocks"] * (w["batch"] + w["seen"])) / (ref["blocks"] * (ref["batch"] + ref["seen"]))
    per_row_synth = ev["synthesis"] / ev["n_synthetic"] * w["blocks"] / ref["blocks"]
    per_epoch = (ev["gzsl"]["time"] / ev["gzsl"]["rows"] * w["gzsl_rows"]
                 + ev["zsl"]["time"] / ev["zsl"]["rows"] * w["synthetic"])
    here = {"flow training": w["iterations"] * per_iter,
            "synthesis": w["evaluations"] * w["synthetic"] * per_row_synth,
            "classifier": w["evaluations"] * w["epochs"] * per_epoch}
    g = proj["h200_seconds"][precision]

    def batches(x):
        return (x["gzsl_rows"] + x["synthetic"]) / x["classifier_batch"] * x["epochs"] * x["evaluations"]
    gpu = {"flow training": g["flow training"] * w["iterations"] * w["blocks"] / (ref["iterations"] * ref["blocks"]),
           "synthesis": g["synthesis"] * (w["evaluations"] * w["synthetic"] * w["blocks"])
           / (ref["evaluations"] * ref["synthetic"] * ref["blocks"]),
           "classifier": g["classifier"] * batches(w) / batches(ref)}
    return dict(here=here, h200=gpu)


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min" if s >= 600 else f"{s / 60:.1f} min"


def measured_runs(folder: Path) -> dict[str, list[dict]]:
    """bench.full_run's records in `folder` of faithful runs on the benchmark's shapes (its data or
    the full-size stand-in), per dataset, fp32 defaults first, then the fastest."""
    from bench.full_run import NAMED_OPTIONS
    found: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("full-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise cli.CommandError(f"{path}: not a bench.full_run record ({exc})") from None
        if not record.get("faithful") or record.get("stand_in") not in ("full", ""):
            continue
        record["label"] = "+".join(n for n in NAMED_OPTIONS if record["options"].get(n)) or "fp32"
        record["file"] = path.name
        found.setdefault(record["dataset"], []).append(record)
    for records in found.values():
        records.sort(key=lambda r: (r["label"] != "fp32", r["wall_seconds"]))
    return found


def where(record: dict) -> str:
    return f"{record['device_name']}, {record['date']}, commit {record['commit']}"


def expected(argv: list[str]) -> dict:
    args = ExpectedOptions(**cli.parse(cli.parser_for("python -m bench.expected_time", __doc__,
                                                      (ExpectedOptions, None)), argv))
    path = Path(args.results) if Path(args.results).is_absolute() else ROOT / args.results
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise cli.CommandError(f"option --results: cannot read {path}: {exc}") from None
    if not res.get("projection"):
        raise cli.CommandError(f"option --results: {path} holds no projection (python -m bench.bench with all "
                               f"three stages writes one)")
    if args.precision not in res["projection"]["h200_seconds"]:
        raise cli.ConfigError(f"option --precision: one of {', '.join(res['projection']['h200_seconds'])}")
    ref = workload("AWA2")
    out = {}
    env = res["environment"]
    device = env.get("device_name", env.get("device"))
    measured = measured_runs(Path(args.measured) if Path(args.measured).is_absolute() else ROOT / args.measured)
    print(f"faithful runs: PROJECTED from the AWA2 unit times measured on {device} in "
          f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"(measured {env.get('date', 'date not recorded')}, commit {env.get('commit', 'not recorded')}, "
          f"{env.get('threads')} threads, load average {env.get('load_average', 'not recorded')}); the H200 column is "
          f"a model (FLOPs and bytes at peak rates), never measured; MEASURED: a full run's wall time (bench.full_run)")
    if env.get("quick"):
        ev = res["stages"]["eval"]
        print(f"note: a --quick result: synthesis and classifier epochs measured on {ev['n_synthetic']:,} synthetic "
              f"rows, scaled up by rows")
    print(f"{'dataset':8s} {'iterations':>10s} {'evals':>5s} {'synthetic rows':>14s} {'projected':>10s} "
          f"{'H200 ' + args.precision:>12s} {'MEASURED':>9s}")
    for name in BENCHMARKS:
        w = workload(name)
        p = project(res, w, ref, args.precision)
        runs = measured.get(name, [])
        out[name] = dict(workload=w, here_seconds=p["here"], h200_seconds=p["h200"], measured=runs)
        shown = hours(runs[0]["wall_seconds"]) if runs and runs[0]["label"] == "fp32" else "-"
        print(f"{name:8s} {w['iterations']:>10,} {w['evaluations']:>5} {w['synthetic']:>14,} "
              f"{hours(sum(p['here'].values())):>10s} {hours(sum(p['h200'].values())):>12s} {shown:>9s}")
    for name, runs in measured.items():
        for r in runs:
            peak = "" if r.get("peak_gpu_gib") is None else f", peak GPU memory {r['peak_gpu_gib']} GiB"
            print(f"MEASURED {name} {r['label']}: {r['wall_seconds']:.0f} s end to end ({where(r)}{peak}; {r['file']})")
    return out


def main(argv=None):
    return cli.main_guard(expected, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
