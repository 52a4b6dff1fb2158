"""`fedward simulate --data DIR`: a hospital's own messy files to a trained federation in one
command, with nothing in the run folder naming a bundled dataset or claiming its licence; and a
schema mismatch that stops in seconds, before any engine starts, with a short diff."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.e2e.processes import BIN

pytestmark = pytest.mark.slow

SITES = {"north-general": 260, "south-clinic": 200, "small-rural": 80}  # one under 100 rows


def write_messy_sites(folder: Path, seed: int = 3) -> None:
    """Three exports as they arrive: trailing spaces and mixed case in text, a column almost
    always empty, a skewed lab value, an impossible age, and a site under 100 rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for site, n in SITES.items():
        age = rng.normal(58, 12, n).round().astype(int)
        crp = np.exp(rng.normal(1.5, 1.0, n)).round(1)
        smoker = rng.choice(["Yes ", "yes", "No ", "no"], n)
        bnp_values = np.exp(rng.normal(5, 0.8, n)).round().astype(int).astype(str)
        bnp = np.where(rng.random(n) < 0.95, "", bnp_values)
        logit = 0.06 * (age - 58) + 0.5 * np.log(crp) + 0.9 * (np.char.strip(smoker) != "no")
        y = (rng.random(n) < 1 / (1 + np.exp(-(logit - 1.2)))).astype(int)
        frame = pd.DataFrame({"age": age, "crp": crp, "smoker": smoker, "bnp": bnp, "y": y})
        if site == "south-clinic":
            frame.loc[7, "age"] = 65526
        frame.to_csv(folder / f"{site}.csv", index=False)


@pytest.fixture(scope="module")
def own_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("own")
    data = tmp / "ward-exports"
    write_messy_sites(data)
    out = tmp / "runs"
    args = [str(BIN / "fedward"), "simulate", "--data", str(data), "--label", "y"]
    args += ["--rounds", "1", "--no-baselines", "--no-audit", "--out", str(out), "--seed", "3"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    return {"dir": run_dir, "stdout": done.stdout, "tmp": tmp, "data": data}


def test_every_site_trains_and_is_tested(own_run: dict[str, Any]) -> None:
    metrics = json.loads((own_run["dir"] / "metrics.json").read_text())
    assert set(metrics["test"]["sites"]) == set(SITES)
    assert (own_run["dir"] / "model.pt").is_file()


def test_the_run_folder_names_the_users_dataset_and_no_bundled_one(
    own_run: dict[str, Any],
) -> None:
    run_dir: Path = own_run["dir"]
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["task"]["dataset"] == "ward-exports" and run_dir.name.endswith("ward-exports")
    assert "(ward-exports)" in (run_dir / "model_card.md").read_text()
    for path in run_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes().lower()
            for word in (b"heart-disease", b"heart disease", b"cc by"):
                assert word not in blob, f"{path.relative_to(run_dir)} names {word.decode()}"
    assert "heart" not in own_run["stdout"].lower()


def test_the_generated_site_configs_and_schema_are_kept_for_review(
    own_run: dict[str, Any],
) -> None:
    folder = own_run["dir"] / "site-configs"
    assert {p.name for p in folder.iterdir()} >= {f"{s}.toml" for s in SITES} | {"schema.toml"}
    schema = (folder / "schema.toml").read_text()
    assert "REVIEW" in schema and "65526" in schema  # the impossible age: declared missing
    out = " ".join(own_run["stdout"].split())
    assert "impossible value" in out and "65526 in south-clinic" in out
    assert "'bnp'" in out and "missing" in out


def test_sites_whose_schema_differs_from_the_runs_stop_before_any_engine_starts(
    own_run: dict[str, Any],
) -> None:
    folder = own_run["dir"] / "site-configs"
    run_toml = own_run["tmp"] / "bundled.toml"
    run_toml.write_text('[task]\ndataset = "heart-disease"\n')  # a run config naming a bundled set
    out = own_run["tmp"] / "mismatch-runs"
    args = [str(BIN / "fedward"), "simulate", "--config", str(run_toml), "--out", str(out)]
    for site in SITES:
        args += ["--site-config", str(folder / f"{site}.toml")]
    start = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - start

    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert elapsed < 20  # Ray alone takes longer than this to start and stop on two cores
    assert not out.exists()  # no run folder: nothing ran
    said = done.stdout + done.stderr
    assert len(said) < 2000 and "Traceback" not in said
    flat = " ".join(said.split())
    assert "3 of 3 sites" in flat and "label column 'y'" in flat
    assert "[task]" in flat and "schema_file" in flat
