"""How fast is encrypted inference end to end, and where does the time go?

For logistic regression and for an MLP with one hidden layer of 16 square units, both trained on the
four heart-disease hospitals in-process (``tests.server.he_support.train_run``), this starts the real
gRPC service on loopback with TLS and an API token, and measures through the clinic's own client
(``EncryptedPredictor.logits``), so encryption, protobuf, TLS, the server's checks, budget ledger and
request log, the evaluation and the decryption are all inside the figures:

- throughput on a large matrix of preprocessed rows, resampled from the hospitals' test splits so
  the values are realistic, in full requests (4,096 patients for LR, 8,192 for the MLP);
- plaintext throughput of the same model in the same run (float64 ``plaintext_logits`` and torch),
  so the cost of encryption is a ratio on one machine, not two numbers from two days;
- the single-patient round trip with an open session (median and p95), and the one-off costs of
  key generation and of opening a session (the public context's upload);
- bytes uploaded per full batch and per single patient, reply bytes, the public context's size;
- one full batch broken into its stages, timed in-process, so a reader sees which stage dominates.

    python -m tests.benchmarks.bench_he [--lr-rows 40960] [--mlp-rows 65536] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts
import torch

from fedward.client.he_predict import EncryptedPredictor, channel, preprocess
from fedward.common.he_context import new_secret_context, public_context_bytes
from fedward.common.models import build_model
from fedward.common.preprocessing import SharedTransform
from fedward.common.run_config import RunConfig
from fedward.server.he_access import Access, add_client, load_clients
from fedward.server.he_model import HEModel, load_run_model
from fedward.server.he_service import (
    EncryptedInferenceService,
    ServiceSettings,
    TLSFiles,
    start_server,
)
from tests.benchmarks.report import busy_cpu_s, own_cpu_s, row
from tests.server.he_support import heart_disease_test_rows, train_run
from tests.tls import make_tls

KINDS = ("logistic", "mlp")
LABEL = {"logistic": "LR", "mlp": "MLP 16 square"}
# The targets, on 2 cores.
TARGET_RATE = {"logistic": 10_000.0, "mlp": 2_000.0}
TARGET_LR_SINGLE_MS = 250.0


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
        **{pkg: metadata.version(pkg) for pkg in ("tenseal", "grpcio", "protobuf", "torch")},
    }


def quiet() -> None:
    """Training logs every round's metrics; the benchmark's table is what should be read."""
    for name in ("flwr", "fedward"):
        logging.getLogger(name).setLevel(logging.WARNING)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ---- inputs -------------------------------------------------------------------------------------


def realistic_rows(run_dir: Path, model: HEModel, n: int, seed: int) -> np.ndarray:
    """``n`` preprocessed rows resampled from the hospitals' test splits, through the run's own
    frozen transform: CKKS cost does not depend on the values, but the accuracy check does."""
    run = RunConfig.model_validate(json.loads((run_dir / "run_config.json").read_text()))
    transform = SharedTransform.from_json(model.transform_json)
    pool = np.vstack(
        [
            preprocess(transform, frame, source=site)
            for site, frame in heart_disease_test_rows(run).items()
        ]
    )
    rng = np.random.default_rng(seed)
    return pool[rng.integers(0, len(pool), size=n)]


def torch_model(run_dir: Path, model: HEModel) -> torch.nn.Module:
    run = RunConfig.model_validate(json.loads((run_dir / "run_config.json").read_text()))
    net = build_model(run.model, model.n_features)
    net.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return net.eval()


def plaintext_rates(
    model: HEModel, net: torch.nn.Module, x: np.ndarray, repeats: int
) -> dict[str, float]:
    """Predictions per second in the clear, best of ``repeats``: the ceiling HE is measured against."""
    xt = torch.from_numpy(x).float()
    best_np = min(timed(model.plaintext_logits, x)[0] for _ in range(repeats))
    with torch.no_grad():
        best_torch = min(timed(net, xt)[0] for _ in range(repeats))
    return {"numpy_float64": len(x) / best_np, "torch": len(x) / best_torch}


# ---- the service --------------------------------------------------------------------------------


@dataclass
class Served:
    service: EncryptedInferenceService
    port: int
    token: str
    ca: Path


@contextlib.contextmanager
def serve(model: HEModel, folder: Path) -> Iterator[Served]:
    """The production path: TLS, a token from the clients file, the SQLite budget and the log."""
    tls = make_tls(folder / "tls")
    clients = folder / "he_clients.toml"
    token = add_client(clients, "bench", query_budget=10**9, requests_per_minute=1_000_000)
    access = Access.open(load_clients(clients), folder / "state")
    service = EncryptedInferenceService(model, access, ServiceSettings())
    server, port = start_server(service, "127.0.0.1:0", tls=TLSFiles(tls.cert, tls.key))
    try:
        yield Served(service, port, token, tls.ca)
    finally:
        server.stop(grace=None)


def server_predict_seconds(service: EncryptedInferenceService) -> tuple[float, float]:
    """(total seconds, requests) the server spent inside Predict, from its own histogram."""
    registry = service.metrics.registry
    labels = {"method": "Predict"}
    total = registry.get_sample_value("fedward_he_request_seconds_sum", labels) or 0.0
    count = registry.get_sample_value("fedward_he_request_seconds_count", labels) or 0.0
    return total, count


# ---- stages -------------------------------------------------------------------------------------


def encrypt_columns(ctx: ts.Context, x: np.ndarray) -> list[ts.CKKSVector]:
    return [ts.ckks_vector(ctx, x[:, j]) for j in range(x.shape[1])]


def serialise_all(vectors: list[ts.CKKSVector]) -> list[bytes]:
    return [v.serialize() for v in vectors]


def parse_and_check(
    service: EncryptedInferenceService, ctx: ts.Context, wire: list[bytes], n: int
) -> list[ts.CKKSVector]:
    """The service's own per-feature parse and freshness check, as Predict runs it."""
    return [service._ciphertext(ctx, data, j, n) for j, data in enumerate(wire)]


def decrypt(ctx: ts.Context, data: bytes) -> list[float]:
    return list(ts.ckks_vector_from(ctx, data).decrypt())


def stage_breakdown(
    service: EncryptedInferenceService, x: np.ndarray, repeats: int
) -> dict[str, float]:
    """One full batch, stage by stage, in-process (no gRPC): median seconds of ``repeats``.

    Mirrors what ``EncryptedPredictor`` and ``EncryptedInferenceService.Predict`` do, so the gap
    between the sum and the end-to-end time per request is gRPC, TLS and protobuf.
    """
    model, access = service.model, service.access
    params = model.parameters
    n = len(x)
    client_ctx = new_secret_context(params)
    server_ctx = ts.context_from(public_context_bytes(client_ctx, params))
    bench_client = next(iter(access.clients.values()))
    runs: dict[str, list[float]] = {}

    def note(stage: str, seconds: float) -> None:
        runs.setdefault(stage, []).append(seconds)

    cols = np.asarray(x, dtype=np.float64)
    for _ in range(repeats):
        s, vectors = timed(encrypt_columns, client_ctx, cols)
        note("client: encrypt", s)
        s, wire = timed(serialise_all, vectors)
        note("client: serialise ciphertexts", s)
        s, loaded = timed(parse_and_check, service, server_ctx, wire, n)
        note("server: parse and check ciphertexts", s)
        s, _ = timed(access.usage.charge, bench_client, n, "bench-stage")
        note("server: charge budget (SQLite)", s)
        s, out = timed(model.evaluate, loaded, n)
        note("server: evaluate", s)
        s, reply = timed(out.serialize)
        note("server: serialise reply", s)
        s, _ = timed(access.log.write, {"method": "Predict", "bench": True})
        note("server: request log (fsync)", s)
        s, _ = timed(decrypt, client_ctx, reply)
        note("client: parse and decrypt", s)
    return {stage: statistics.median(values) for stage, values in runs.items()}


# ---- one model ----------------------------------------------------------------------------------


def measure_model(
    kind: str, run_dir: Path, folder: Path, *, rows: int, singles: int, repeats: int, seed: int
) -> dict[str, Any]:
    model = load_run_model(run_dir)
    x = realistic_rows(run_dir, model, rows, seed)
    reference = model.plaintext_logits(x)
    plain = plaintext_rates(model, torch_model(run_dir, model), x, max(repeats, 20))
    result: dict[str, Any] = {
        "kind": kind,
        "description": model.description,
        "depth": model.depth,
        "parameters": model.parameters.to_dict(),
        "rows": rows,
        "plaintext_per_s": plain,
    }
    with serve(model, folder) as served:
        chan = channel(f"127.0.0.1:{served.port}", ca_certificate=served.ca)
        setup_s, predictor = timed(lambda: EncryptedPredictor(chan, token=served.token))
        batch = predictor.info.max_batch
        opens = [timed(predictor.open_session)[0] for _ in range(3)]

        # Warm-up full batch (first-call costs), which also gives the bytes of one full request.
        sent, received = predictor.bytes_sent, predictor.bytes_received
        predictor.logits(x[:batch])
        full_up, full_down = predictor.bytes_sent - sent, predictor.bytes_received - received

        rates, worst = [], 0.0
        server_before = server_predict_seconds(served.service)
        for _ in range(repeats):
            seconds, logits = timed(predictor.logits, x)
            rates.append(rows / seconds)
            worst = max(worst, float(np.abs(logits - reference).max()))
        server_total, server_count = (
            a - b
            for a, b in zip(server_predict_seconds(served.service), server_before, strict=True)
        )
        requests = repeats * -(-rows // batch)

        sent, received = predictor.bytes_sent, predictor.bytes_received
        predictor.logits(x[:1])  # warm-up, and the bytes of one patient
        one_up, one_down = predictor.bytes_sent - sent, predictor.bytes_received - received
        single_ms = [1000 * timed(predictor.logits, x[i : i + 1])[0] for i in range(singles)]
        context_bytes = len(predictor.public_context)
        predictor.close()
        chan.close()
        stages = stage_breakdown(served.service, x[:batch], max(repeats, 5))

    rate = statistics.median(rates)
    per_request_s = rows / rate / -(-rows // batch)
    result.update(
        max_batch=batch,
        predictions_per_s={"median": rate, "min": min(rates), "max": max(rates), "runs": rates},
        he_slowdown_vs_numpy=plain["numpy_float64"] / rate,
        he_slowdown_vs_torch=plain["torch"] / rate,
        max_abs_logit_error=worst,
        full_request_s=per_request_s,
        server_predict_s=server_total / server_count if server_count else None,
        server_requests_counted=int(server_count),
        requests_timed=requests,
        single_patient_ms={
            "median": statistics.median(single_ms),
            "p95": percentile(single_ms, 95),
            "min": min(single_ms),
            "max": max(single_ms),
            "calls": singles,
        },
        client_setup_s=setup_s,
        open_session_s={"median": statistics.median(opens), "runs": opens},
        bytes={
            "public_context": context_bytes,
            "upload_full_batch": full_up,
            "upload_per_patient_full_batch": full_up / batch,
            "upload_single_patient": one_up,
            "reply_full_batch": full_down,
            "reply_single_patient": one_down,
        },
        stages_s=stages,
        stages_sum_s=sum(stages.values()),
    )
    return result


# ---- report -------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n:.0f} B"


def targets(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [
        {
            "target": f"{LABEL[k]} ≥ {TARGET_RATE[k]:,.0f} encrypted predictions/s end to end",
            "measured": results[k]["predictions_per_s"]["median"],
            "pass": results[k]["predictions_per_s"]["median"] >= TARGET_RATE[k],
        }
        for k in KINDS
        if k in results
    ]
    if "logistic" in results:
        single = results["logistic"]["single_patient_ms"]["median"]
        rows.append(
            {
                "target": f"LR single-patient round trip < {TARGET_LR_SINGLE_MS:.0f} ms (median)",
                "measured": single,
                "pass": single < TARGET_LR_SINGLE_MS,
            }
        )
    return rows


def print_report(results: dict[str, dict[str, Any]], target_rows: list[dict[str, Any]]) -> None:
    kinds = [k for k in KINDS if k in results]

    def line(label: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        print(f"{label:<44}" + "".join(f" {fmt(results[k]):>18}" for k in kinds))

    print(f"\n{'':<44}" + "".join(f" {LABEL[k]:>18}" for k in kinds))
    line(
        "CKKS ring N / patients per request",
        lambda r: f"{r['parameters']['poly_modulus_degree']} / {r['max_batch']}",
    )
    line("rows timed (per run)", lambda r: f"{r['rows']:,}")
    line(
        "encrypted predictions/s, end to end (med)",
        lambda r: f"{r['predictions_per_s']['median']:,.0f}",
    )
    line(
        "  min – max over runs",
        lambda r: f"{r['predictions_per_s']['min']:,.0f}–{r['predictions_per_s']['max']:,.0f}",
    )
    line(
        "plaintext predictions/s, numpy float64",
        lambda r: f"{r['plaintext_per_s']['numpy_float64']:,.0f}",
    )
    line("plaintext predictions/s, torch", lambda r: f"{r['plaintext_per_s']['torch']:,.0f}")
    line("slowdown vs numpy", lambda r: f"{r['he_slowdown_vs_numpy']:,.0f}×")
    line("full request, end to end", lambda r: f"{r['full_request_s'] * 1000:,.0f} ms")
    line(
        "  of which inside the server's Predict",
        lambda r: f"{r['server_predict_s'] * 1000:,.0f} ms",
    )
    line("single patient, median", lambda r: f"{r['single_patient_ms']['median']:,.1f} ms")
    line("single patient, p95", lambda r: f"{r['single_patient_ms']['p95']:,.1f} ms")
    line("client set-up (model info + keys)", lambda r: f"{r['client_setup_s'] * 1000:,.0f} ms")
    line(
        "open session (context upload)", lambda r: f"{r['open_session_s']['median'] * 1000:,.0f} ms"
    )
    line("public context", lambda r: _mb(r["bytes"]["public_context"]))
    line("upload, full request", lambda r: _mb(r["bytes"]["upload_full_batch"]))
    line(
        "  per patient in a full request",
        lambda r: _mb(r["bytes"]["upload_per_patient_full_batch"]),
    )
    line("upload, single patient", lambda r: _mb(r["bytes"]["upload_single_patient"]))
    line("reply, full request", lambda r: _mb(r["bytes"]["reply_full_batch"]))
    line("reply, single patient", lambda r: _mb(r["bytes"]["reply_single_patient"]))
    line("max |encrypted − plaintext| logit", lambda r: f"{r['max_abs_logit_error']:.1e}")

    print("\none full request, stage by stage, in-process (ms, median)")
    stages = list(results[kinds[0]]["stages_s"])
    for stage in stages:
        cells = "".join(f" {results[k]['stages_s'][stage] * 1000:>18,.1f}" for k in kinds)
        print(f"{'  ' + stage:<44}{cells}")
    line("  sum of stages", lambda r: f"{r['stages_sum_s'] * 1000:,.1f}")
    line(
        "  rest: gRPC, TLS, protobuf (by difference)",
        lambda r: f"{(r['full_request_s'] - r['stages_sum_s']) * 1000:,.1f}",
    )

    print("\ntargets")
    for t in target_rows:
        print(f"  {t['target']:<62} {t['measured']:>10,.1f}  {'pass' if t['pass'] else 'MISS'}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench_he", description=__doc__
    )
    parser.add_argument("--lr-rows", type=int, default=10 * 4096, help="LR rows per timed run.")
    parser.add_argument("--mlp-rows", type=int, default=8 * 8192, help="MLP rows per timed run.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of the whole matrix.")
    parser.add_argument("--singles", type=int, default=20, help="Single-patient calls timed.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the row resampling.")
    parser.add_argument("--only", choices=KINDS, default=None, help="Measure one model only.")
    parser.add_argument("--json", default=None, help="Write every result here.")
    return parser.parse_args(argv)


def collect(
    *, lr_rows: int, mlp_rows: int, repeats: int, singles: int, seed: int, only: str | None = None
) -> dict[str, Any]:
    """Train each model, serve it and measure it; the machine's other load is recorded."""
    quiet()
    started = time.perf_counter()
    busy_before, own_before = busy_cpu_s(), own_cpu_s()
    output: dict[str, Any] = {
        "benchmark": "encrypted inference end to end (gRPC, TLS, token) and by stage",
        "settings": {
            "lr_rows": lr_rows,
            "mlp_rows": mlp_rows,
            "repeats": repeats,
            "singles": singles,
            "seed": seed,
            "only": only,
        },
        "machine": machine_info(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="fedward-bench-he-") as tmp:
        for kind in [only] if only else KINDS:
            folder = Path(tmp) / kind
            train_s, run_dir = timed(train_run, kind, folder / "run")
            result = measure_model(
                kind,
                run_dir,
                folder,
                rows=lr_rows if kind == "logistic" else mlp_rows,
                singles=singles,
                repeats=repeats,
                seed=seed,
            )
            result["train_s"] = train_s
            output["models"][kind] = result
    busy_after = busy_cpu_s()
    if busy_before is not None and busy_after is not None:
        others = busy_after - busy_before - (own_cpu_s() - own_before)
        output["machine"]["other_processes_cpu_s"] = round(max(others, 0.0), 1)
    output["benchmark_s"] = round(time.perf_counter() - started, 1)
    return output


def measure(*, quick: bool = False) -> dict[str, Any]:
    """The suite's entry: encrypted against plaintext throughput, and one patient's latency."""
    if quick:
        out = collect(lr_rows=4096, mlp_rows=8192, repeats=1, singles=3, seed=0)
    else:
        out = collect(lr_rows=10 * 4096, mlp_rows=8 * 8192, repeats=3, singles=20, seed=0)
    rows: list[dict[str, Any]] = []
    for kind, res in out["models"].items():
        comparison = f"encrypted inference, {LABEL[kind]}"
        rate = res["predictions_per_s"]["median"]
        single = res["single_patient_ms"]["median"]
        lr = kind == "logistic"
        rows += [
            row(
                comparison,
                "encrypted predictions per second, end to end",
                rate,
                "/s",
                f"≥ {TARGET_RATE[kind]:,.0f}/s",
                rate >= TARGET_RATE[kind],
            ),
            row(
                comparison,
                "plaintext predictions per second (torch)",
                res["plaintext_per_s"]["torch"],
                "/s",
            ),
            row(comparison, "plaintext / encrypted throughput", res["he_slowdown_vs_torch"], "x"),
            row(
                comparison,
                "one patient, round trip (median)",
                single,
                "ms",
                f"< {TARGET_LR_SINGLE_MS:.0f} ms" if lr else None,
                single < TARGET_LR_SINGLE_MS if lr else None,
            ),
        ]
    return {"name": "he", "setup": out["settings"], "results": out, "rows": rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    output = collect(
        lr_rows=args.lr_rows,
        mlp_rows=args.mlp_rows,
        repeats=args.repeats,
        singles=args.singles,
        seed=args.seed,
        only=args.only,
    )
    output["targets"] = targets(output["models"])
    print_report(output["models"], output["targets"])
    # The machine is shared: a load well over 1 beside this process means the figures are slowed.
    output["machine"]["load_average_at_end"] = list(os.getloadavg())
    others = output["machine"].get("other_processes_cpu_s")
    print(
        f"\nwhole benchmark: {output['benchmark_s']:.1f} s; CPU seconds other processes used "
        f"meanwhile: {others} ({output['machine']})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(output, fh, indent=2)
    return output


if __name__ == "__main__":
    main()
