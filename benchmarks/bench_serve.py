"""Serving benchmark (issue 6): latency and throughput of ``POST /predict``, and model load time.

What it does, on this machine:

1. Trains a late-fusion model on Tux Paint stamps (image + text + audio) with the pretrained
   encoders when they are installed (else the classical hog / tfidf / mfcc; the output says
   which), saves it, and checks that the loaded model predicts bit for bit what the model
   did before saving.
2. Load time, in a fresh process: ``import mmfuse`` + ``mmfuse.load(path)``, then the
   encoders' weights made ready (pretrained encoders load ONNX sessions lazily).
3. Starts the real service (``mmfuse.serve.run_server``) in its own process on 127.0.0.1
   and sends multipart requests with one image + text + audio sample:

   * latency: one client, sequential requests: p50 / p90 / p99;
   * throughput: 8 concurrent clients (threads, one keep-alive connection each) for a fixed
     number of requests: requests/s, latency percentiles under load, and the mean batch
     size the service formed (from ``/health``).

   Clients and server share the machine's cores, as they would on a one-box deployment.

Writes ``benchmarks/results/serve.md`` and ``serve.json``; with ``--update-results`` also
the serving section of ``benchmarks/RESULTS.md``. Numbers come from this script only.

Usage::

    PYTHONPATH=src python benchmarks/bench_serve.py            # ~3-6 min
    PYTHONPATH=src python benchmarks/bench_serve.py --quick    # smoke run
    PYTHONPATH=src python benchmarks/bench_serve.py --encoders classical

The data comes from ``$MMFUSE_DATA`` (default ``../shared/data``), read only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from _common import rebuild_results  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402

DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))
RESULTS_MD = HERE / "results" / "serve.md"
RESULTS_JSON = HERE / "results" / "serve.json"
CLASSICAL = {"image": "hog", "text": "tfidf", "audio": "mfcc"}
MODALITIES = ("audio", "image", "text")


def pick_encoders(kind: str) -> tuple[dict[str, str], str]:
    if kind == "classical":
        return dict(CLASSICAL), "classical (hog, tfidf, mfcc)"
    try:
        from mmfuse.encoders.pretrained import best_available_encoder
    except ImportError:
        if kind == "pretrained":
            sys.exit("mmfuse.encoders.pretrained is not available")
        return dict(CLASSICAL), "classical (mmfuse.encoders.pretrained not available)"
    chosen = {m: best_available_encoder(m) for m in MODALITIES}
    if kind == "pretrained" and any(chosen[m] == CLASSICAL[m] for m in MODALITIES):
        sys.exit(f"not every pretrained encoder is installed: {chosen}")
    pretrained = [m for m in MODALITIES if chosen[m] != CLASSICAL[m]]
    label = ("pretrained" if len(pretrained) == 3 else
             "mixed" if pretrained else "classical") + " (" + ", ".join(
        f"{m}: {chosen[m]}" for m in MODALITIES) + ")"
    return chosen, label


def training_table(n: int, encoders: dict[str, str]):
    """``n`` random stamps with all three modalities that every encoder can decode."""
    from mmfuse.data.datasets import load_dataset
    from mmfuse.encoders import create_encoder

    X, y, _ = load_dataset("tuxpaint", root=DATA)
    complete = X[list(MODALITIES)].notna().all(axis=1).to_numpy()
    png = X["image"].astype(str).str.endswith(".png").to_numpy()
    candidates = np.random.default_rng(0).permutation(np.flatnonzero(complete & png))
    classes, counts = np.unique(y[candidates], return_counts=True)
    classes = classes[counts >= 10]  # enough for inner cross-validation
    quota = -(-n // len(classes))
    built = {m: create_encoder(encoders[m]) for m in MODALITIES}
    rows: list[int] = []
    taken = dict.fromkeys(classes.tolist(), 0)
    for i in candidates:
        if taken.get(y[i], quota) >= quota:
            continue
        try:
            for m in MODALITIES:
                built[m].prepare(X.iloc[i][m])
        except Exception as exc:  # a file some preprocessing cannot handle: leave it out
            print(f"skipping {X.iloc[i]['image']}: {type(exc).__name__}: {exc}", flush=True)
            continue
        rows.append(i)
        taken[y[i]] += 1
    rows = np.sort(rows)
    return X.iloc[rows][list(MODALITIES)].reset_index(drop=True), y[rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "n": int(a.size)}


# Wall and CPU seconds (CPU: all threads of the process; unlike wall time it hardly grows
# when other processes compete for the cores).
LOAD_CODE = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import mmfuse
t1, c1 = time.perf_counter(), time.process_time()
model = mmfuse.load(sys.argv[1])
t2, c2 = time.perf_counter(), time.process_time()
for enc in model.encoders_.values():
    if callable(getattr(type(enc), "load", None)):
        enc.load()
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "weights_ready_s": t3 - t2,
                  "total_s": t3 - t0, "load_cpu_s": c2 - c0, "total_cpu_s": c3 - c0}))
"""


def measure_load(path: Path, repeats: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_CODE, str(path)], env=env,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"repeats": repeats}


def start_server(path: Path, port: int) -> subprocess.Popen:
    import httpx

    code = ("import sys; from mmfuse.serve import run_server; "
            f"run_server(sys.argv[1], '127.0.0.1', {port}, log_level='warning')")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("the server did not start")
        time.sleep(0.2)


def sample_request(row) -> dict:
    return {"files": {"image": ("stamp.png", Path(row["image"]).read_bytes(), "image/png"),
                      "audio": ("said.ogg", Path(row["audio"]).read_bytes(), "audio/ogg")},
            "data": {"text": row["text"]}}


def sequential(url: str, request: dict, n: int) -> list[float]:
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.post("/predict", **request)
            times.append(time.perf_counter() - start)
            response.raise_for_status()
    return times


def concurrent(url: str, request: dict, clients: int, per_client: int) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    failures: list[str] = []

    def worker() -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=300) as client:
            client.get("/health")  # open the connection before the clock starts
            barrier.wait()
            for _ in range(per_client):
                start = time.perf_counter()
                response = client.post("/predict", **request)
                mine.append(time.perf_counter() - start)
                if response.status_code != 200:
                    failures.append(response.text[:200])
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        sys.exit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return elapsed, latencies


def render_markdown(r: dict) -> str:
    lat, load, thr = r["latency"], r["load"], r["throughput"]
    lines = [
        "# Serving benchmark (`benchmarks/bench_serve.py`)",
        "",
        f"Measured {r['date']} on {r['machine']} ({r['cpus']} CPUs), Python {r['python']}, "
        f"mmfuse {r['mmfuse']}. Encoders: **{r['encoders_label']}**; fusion: {r['fusion']}; "
        f"model trained on {r['n_train']} Tux Paint stamps; model file {r['model_bytes']:,} bytes.",
        "",
        "One request = one sample with an image (PNG, "
        f"{r['sample']['image_bytes']:,} bytes), its text ({r['sample']['text_chars']} "
        f"characters) and audio (OGG, {r['sample']['audio_bytes']:,} bytes), sent as "
        "multipart to `POST /predict` of the real service (uvicorn, one process) on "
        "127.0.0.1. Clients run on the same machine and share its cores.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| latency p50, 1 client ({lat['n']} sequential requests) | {lat['p50_ms']:.1f} ms |",
        f"| latency p90, 1 client | {lat['p90_ms']:.1f} ms |",
        f"| latency p99, 1 client | {lat['p99_ms']:.1f} ms |",
        f"| throughput, {thr['clients']} concurrent clients ({thr['requests']} requests) "
        f"| {thr['requests_per_s']:.2f} requests/s |",
        f"| latency p50 / p99 under {thr['clients']} clients | {thr['p50_ms']:.0f} ms / "
        f"{thr['p99_ms']:.0f} ms |",
        f"| mean batch size formed by the service under load | {thr['mean_batch_size']:.2f} "
        f"(max {thr['max_batch_size']}) |",
        f"| model load: `import mmfuse` + `mmfuse.load()` (fresh process, median of "
        f"{load['repeats']}) | {load['import_s'] + load['load_s']:.2f} s wall, "
        f"{load['load_cpu_s']:.2f} s CPU |",
        f"| ... + encoder weights ready (what the service waits for) | {load['total_s']:.2f} s "
        f"wall, {load['total_cpu_s']:.2f} s CPU (target: under 5 s; wall "
        f"{'meets' if load['total_s'] < 5 else 'misses'} it, CPU "
        f"{'meets' if load['total_cpu_s'] < 5 else 'misses'} it) |",
        f"| loaded model's predictions equal the original's, bit for bit | "
        f"{'yes' if r['bit_identical'] else 'NO'} ({r['n_train']} training samples) |",
        "",
        f"Machine load average (1 min) at the start and end of the run: "
        f"{r['loadavg'][0]:.1f} and {r['loadavg'][1]:.1f} on {r['cpus']} CPUs. Other work "
        "running on the machine slows every wall-clock number above; the CPU seconds of "
        "the load hardly change with it.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", choices=("auto", "pretrained", "classical"), default="auto")
    parser.add_argument("--train", type=int, default=120, help="training samples")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    parser.add_argument("--update-results", action="store_true",
                        help="also write the serving section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.train, args.requests, args.per_client = 45, 30, 5

    import httpx

    import mmfuse
    from mmfuse import MultimodalClassifier

    load_start = os.getloadavg()[0]
    encoders, label = pick_encoders(args.encoders)
    print(f"encoders: {label}", flush=True)
    X, y = training_table(args.train, encoders)
    started = time.perf_counter()
    model = MultimodalClassifier(encoders=encoders, fusion="late", cv=3, random_state=0).fit(X, y)
    print(f"trained on {len(X)} samples in {time.perf_counter() - started:.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "bench.mmfuse")
        model_bytes = path.stat().st_size
        loaded = mmfuse.load(path)
        bit_identical = loaded.predict_proba(X).tobytes() == model.predict_proba(X).tobytes()
        load = measure_load(path, 1 if args.quick else 3)
        print(f"load: {load}", flush=True)

        row = X.iloc[0]
        request = sample_request(row)
        port = free_port()
        server = start_server(path, port)
        url = f"http://127.0.0.1:{port}"
        try:
            sequential(url, request, 5)  # warm-up
            latency = percentiles(sequential(url, request, args.requests))
            print(f"latency: {latency}", flush=True)
            before = httpx.get(url + "/health").json()
            elapsed, times = concurrent(url, request, args.clients, args.per_client)
            after = httpx.get(url + "/health").json()
        finally:
            server.terminate()
            server.wait(30)
    n = args.clients * args.per_client
    batches = max(after["batches"] - before["batches"], 1)
    throughput = {"clients": args.clients, "requests": n, "seconds": elapsed,
                  "requests_per_s": n / elapsed, **{k: v for k, v in percentiles(times).items()
                                                    if k != "n"},
                  "mean_batch_size": (after["requests"] - before["requests"]) / batches,
                  "max_batch_size": after["max_batch_size"]}
    print(f"throughput: {throughput}", flush=True)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(terse=True),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "mmfuse": mmfuse.__version__,
        "encoders": encoders,
        "encoders_label": label,
        "fusion": "late",
        "n_train": len(X),
        "model_bytes": model_bytes,
        "sample": {"image_bytes": len(request["files"]["image"][1]),
                   "audio_bytes": len(request["files"]["audio"][1]),
                   "text_chars": len(row["text"])},
        "bit_identical": bit_identical,
        "load": load,
        "latency": latency,
        "throughput": throughput,
        "quick": args.quick,
        "loadavg": [load_start, os.getloadavg()[0]],
    }
    markdown = render_markdown(result)
    RESULTS_MD.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_MD, markdown)
    atomic_write_text(RESULTS_JSON, json.dumps(result, indent=2) + "\n")
    if args.update_results:
        rebuild_results()  # RESULTS.md from every section in benchmarks/results/
    print(markdown)


if __name__ == "__main__":
    main()
