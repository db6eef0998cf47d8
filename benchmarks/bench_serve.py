"""Serving benchmark (issue 6): latency and throughput of ``POST /predict``, and model load time.

What it does, on this machine:

1. Trains a late-fusion model on Tux Paint stamps (image + text + audio) with the pretrained
   encoders when they are installed (else the classical hog / tfidf / mfcc; the output says
   which), saves it, and checks that the loaded model predicts bit for bit what the model
   did before saving.
2. Load time, in a fresh process: ``import mmfuse`` + ``mmfuse.load(path)``, then the
   encoders' weights made ready (pretrained encoders load ONNX sessions lazily).
3. Starts the real service (``mmfuse.serving.run_server``) in its own process on 127.0.0.1
   and sends multipart requests with one image + text + audio sample:

   * latency: one client, sequential requests: p50 / p90 / p99;
   * throughput: 8 concurrent clients (threads, one keep-alive connection each) for a fixed
     number of requests: requests/s, latency percentiles under load, and the mean batch
     size the service formed (from ``/health``).

   Clients and server share the machine's cores, as they would on a one-box deployment.

4. Production behaviour (issue 18), each on its own real ``mmfuse serve`` process:

   * API keys: requests alternate between a server without keys and one with a key
     (``$MMFUSE_API_KEYS``), the order flipping every pair; p50 with keys / p50 without,
     overall and per block (target: within 1.1x);
   * overload: bursts of 10 x ``--max-queue`` concurrent requests against
     ``--max-queue 8 --request-timeout 10``: every request answered 200 or 503 within the
     timeout, none hung, no other status, and the service healthy afterwards;
   * SIGTERM with 20 requests in flight (held in a 2 s batch window so that all 20 are in
     the service when the signal comes): all 20 answered 200, new connections refused
     while draining, exit status 0.

Writes ``benchmarks/results/serve.md`` (through ``_common.write_section``, which rebuilds
``benchmarks/RESULTS.md``) and ``serve.json``. Numbers come from this script only.

Usage::

    PYTHONPATH=src python benchmarks/bench_serve.py            # ~6-10 min
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from _common import machine, stamp, write_section  # noqa: E402
from mmfuse._io import atomic_write_text  # noqa: E402

DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))
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


def start_server(path: Path, port: int, *options: str, env: dict | None = None,
                 log: Path | None = None) -> subprocess.Popen:
    """``mmfuse serve`` in its own process (the real CLI); waits until /health answers."""
    import httpx

    full_env = dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env or {}))
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse", "serve", str(path), "--port",
                             str(port), *options], env=full_env, stdout=out,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
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


def stop_server(proc: subprocess.Popen) -> int:
    proc.terminate()
    return proc.wait(60)


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


BENCH_KEY = "bench-7f3c2a9e41d84b06"


def metric(url: str, name: str, headers: dict | None = None) -> float:
    """One unlabelled sample from the service's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", headers=headers or {}, timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise KeyError(name)


def auth_overhead(url_off: str, url_on: str, request: dict, pairs: int,
                  block: int) -> dict[str, Any]:
    """Sequential requests alternating between the server without keys and the one with
    keys (the order flips every pair), so that load drift hits both alike; p50 per block of
    ``block`` pairs and overall."""
    import httpx

    off: list[float] = []
    on: list[float] = []
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    with httpx.Client(base_url=url_off, timeout=120) as a, \
            httpx.Client(base_url=url_on, timeout=120, headers=headers) as b:
        for client in (a, b):
            for _ in range(20):
                client.post("/predict", **request).raise_for_status()  # same warm-up for both
        for i in range(pairs):
            order = ((a, off), (b, on)) if i % 2 == 0 else ((b, on), (a, off))
            for client, times in order:
                start = time.perf_counter()
                response = client.post("/predict", **request)
                times.append(time.perf_counter() - start)
                response.raise_for_status()
        refused = httpx.post(url_on + "/predict", **request, timeout=60).status_code
    ratios = [float(np.median(on[k:k + block]) / np.median(off[k:k + block]))
              for k in range(0, pairs - block + 1, block)]
    return {"pairs": pairs, "block": block, "p50_off_ms": 1000 * float(np.median(off)),
            "p50_on_ms": 1000 * float(np.median(on)),
            "ratio_overall": float(np.median(on) / np.median(off)),
            "block_ratios": ratios, "ratio_median_of_blocks": float(np.median(ratios)),
            "without_key_status": refused}


def burst(url: str, request: dict, n: int, client_timeout: float) -> dict[str, Any]:
    """``n`` concurrent requests released at once (one connection each, opened beforehand)."""
    import httpx

    barrier = threading.Barrier(n + 1)
    results: list[tuple[int | str, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=client_timeout) as client:
            client.get("/health")
            barrier.wait()
            start = time.perf_counter()
            try:
                status: int | str = client.post("/predict", **request).status_code
            except httpx.TimeoutException:
                status = "hung"
            except httpx.TransportError as exc:
                status = type(exc).__name__
            with lock:
                results.append((status, time.perf_counter() - start))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    statuses = [s for s, _ in results]
    times = [t for _, t in results]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    return {"n": n, "counts": counts, "max_s": max(times),
            "p50_503_ms": 1000 * float(np.median([t for s, t in results if s == 503] or [0])),
            "p50_200_ms": 1000 * float(np.median([t for s, t in results if s == 200] or [0]))}


def sigterm_drain(path: Path, port: int, request: dict, n: int, batch_wait_ms: int,
                  log: Path) -> dict[str, Any]:
    """``n`` requests held in flight (a ``batch_wait_ms`` batch window), then SIGTERM."""
    import signal

    import httpx

    url = f"http://127.0.0.1:{port}"
    proc = start_server(path, port, "--batch-max", str(2 * n), "--batch-wait-ms",
                        str(batch_wait_ms), log=log)
    statuses: list[int | str] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            try:
                status: int | str = client.post("/predict", **request).status_code
            except httpx.TransportError as exc:
                status = type(exc).__name__
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while (in_flight := metric(url, "mmfuse_predict_in_progress")) < n:
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"only {in_flight} of {n} requests reached the service")
        time.sleep(0.02)
    signalled = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    refused = False
    while any(t.is_alive() for t in threads):
        if not refused:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                refused = True
        time.sleep(0.02)
    code = proc.wait(120)
    drained_s = time.perf_counter() - signalled
    return {"in_flight": int(in_flight), "statuses": {str(s): statuses.count(s)
                                                      for s in sorted(set(statuses), key=str)},
            "all_200": statuses == [200] * n, "exit_code": code, "drain_s": drained_s,
            "new_connections_refused": refused, "batch_wait_ms": batch_wait_ms}


def render_markdown(r: dict) -> str:
    lat, load, thr = r["latency"], r["load"], r["throughput"]
    au, ov, dr = r["auth"], r["overload"], r["drain"]
    burst_counts = "; ".join(", ".join(f"{v} x {k}" for k, v in sorted(b["counts"].items()))
                             for b in ov["bursts"])
    lines = [
        "# Serving benchmark (`benchmarks/bench_serve.py`)",
        "",
        f"Measured {r['date']} on {r['machine']}, "
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
        "### Production behaviour",
        "",
        "Each scenario runs the real `mmfuse serve` (CLI) in its own process; access log on.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| API keys on: p50 within 1.1x of keys off (same run, {au['pairs']} alternating "
        f"pairs) | p50 {au['p50_on_ms']:.1f} ms with keys vs {au['p50_off_ms']:.1f} ms "
        f"without: ratio {au['ratio_overall']:.3f}; median of {len(au['block_ratios'])} "
        f"per-block ratios ({au['block']} pairs each) {au['ratio_median_of_blocks']:.3f} "
        f"(range {min(au['block_ratios']):.2f}-{max(au['block_ratios']):.2f}) | "
        f"{'yes' if au['ratio_median_of_blocks'] <= 1.1 else 'NO'} |",
        f"| a request without a key is refused | {au['without_key_status']} | "
        f"{'yes' if au['without_key_status'] == 401 else 'NO'} |",
        f"| burst of {10 * ov['max_queue']} concurrent requests (10 x `--max-queue "
        f"{ov['max_queue']}`, `--request-timeout {ov['request_timeout_s']:g}`), "
        f"{len(ov['bursts'])} bursts: every one answered 200 or 503 within the timeout | "
        f"per burst {burst_counts}; slowest answer (median over bursts) "
        f"{ov['median_max_s']:.2f} s; median 503 answered in {ov['median_p50_503_ms']:.0f} ms "
        f"| {'yes' if ov['answered_in_timeout'] and not ov['hung'] and not ov['other'] else 'NO'} |",
        f"| ... 0 hung, 0 statuses other than 200/503 | {ov['hung']} hung, {ov['other']} other "
        f"| {'yes' if not ov['hung'] and not ov['other'] else 'NO'} |",
        f"| ... the service healthy afterwards (/health ok, a request answered 200, nothing "
        f"left in progress) | {'yes' if ov['healthy_after'] else 'no'} | "
        f"{'yes' if ov['healthy_after'] else 'NO'} |",
        f"| SIGTERM with {dr['in_flight']} requests in flight: all complete with 200 | "
        f"{dr['statuses']}; drained and exited in {dr['drain_s']:.2f} s | "
        f"{'yes' if dr['all_200'] else 'NO'} |",
        f"| ... new connections refused while draining; exit status 0 | "
        f"{'refused' if dr['new_connections_refused'] else 'accepted'}; exit "
        f"{dr['exit_code']} | "
        f"{'yes' if dr['new_connections_refused'] and dr['exit_code'] == 0 else 'NO'} |",
        f"| servers stopped with SIGTERM exit 0 | exit statuses {r['stop_exit_codes']} | "
        f"{'yes' if all(c == 0 for c in r['stop_exit_codes']) else 'NO'} |",
        f"| the key and the request text never appear in the access logs | key "
        f"{'found' if r['key_in_logs'] else 'absent'}, text "
        f"{'found' if r['text_in_logs'] else 'absent'} | "
        f"{'yes' if not (r['key_in_logs'] or r['text_in_logs']) else 'NO'} |",
        "",
        f"The {dr['in_flight']} in-flight requests are held by a {dr['batch_wait_ms']} ms batch "
        "window (`--batch-wait-ms`), so that all of them are inside the service when the "
        "signal arrives. Ratios compare numbers measured in the same run; wall-clock values "
        "move with the machine's load.",
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
    parser.add_argument("--auth-pairs", type=int, default=200,
                        help="request pairs alternating between auth off and on")
    parser.add_argument("--auth-block", type=int, default=20, help="pairs per ratio block")
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--hold-ms", type=int, default=2000,
                        help="batch window that holds the in-flight requests at SIGTERM")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.train, args.requests, args.per_client = 45, 30, 5
        args.auth_pairs, args.auth_block, args.bursts = 40, 10, 1

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
        port, port_keys = free_port(), free_port()
        logs = Path(tmp)
        server = start_server(path, port, log=logs / "plain.log")
        server_keys = start_server(path, port_keys, env={"MMFUSE_API_KEYS": BENCH_KEY},
                                   log=logs / "keys.log")
        url, url_keys = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port_keys}"
        try:
            # first, while both servers are equally fresh (each gets the same warm-up)
            auth = auth_overhead(url, url_keys, request, args.auth_pairs, args.auth_block)
            print(f"auth: {auth}", flush=True)
            sequential(url, request, 5)  # warm-up
            latency = percentiles(sequential(url, request, args.requests))
            print(f"latency: {latency}", flush=True)
            before = httpx.get(url + "/health").json()
            elapsed, times = concurrent(url, request, args.clients, args.per_client)
            after = httpx.get(url + "/health").json()
        finally:
            exit_codes = [stop_server(server), stop_server(server_keys)]
        key_logged = BENCH_KEY in (logs / "keys.log").read_text(errors="replace")
        text_logged = row["text"] in ((logs / "keys.log").read_text(errors="replace")
                                      + (logs / "plain.log").read_text(errors="replace"))

        # overload: bursts of 10 x --max-queue concurrent requests
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(path, port, "--max-queue", str(args.max_queue),
                              "--request-timeout", str(args.request_timeout),
                              log=logs / "burst.log")
        try:
            bursts = []
            for i in range(args.bursts):
                bursts.append(burst(url, request, 10 * args.max_queue,
                                    args.request_timeout + 30))
                print(f"burst {i + 1}: {bursts[-1]}", flush=True)
            healthy = (httpx.get(url + "/health", timeout=30).json()["status"] == "ok"
                       and httpx.post(url + "/predict", **request,
                                      timeout=60).status_code == 200
                       and metric(url, "mmfuse_predict_in_progress") == 0)
        finally:
            exit_codes.append(stop_server(server))

        # graceful shutdown with requests in flight
        drain = sigterm_drain(path, free_port(), request, args.in_flight, args.hold_ms,
                              logs / "drain.log")
        print(f"drain: {drain}", flush=True)
    overload = {"max_queue": args.max_queue, "request_timeout_s": args.request_timeout,
                "bursts": bursts, "healthy_after": healthy,
                "answered_in_timeout": all(b["max_s"] <= args.request_timeout for b in bursts),
                "hung": sum(b["counts"].get("hung", 0) for b in bursts),
                "other": sum(v for b in bursts for k, v in b["counts"].items()
                             if k not in ("200", "503")),
                "median_counts": {k: float(np.median([b["counts"].get(k, 0) for b in bursts]))
                                  for k in ("200", "503")},
                "median_max_s": float(np.median([b["max_s"] for b in bursts])),
                "median_p50_503_ms": float(np.median([b["p50_503_ms"] for b in bursts]))}
    n = args.clients * args.per_client
    batches = max(after["batches"] - before["batches"], 1)
    throughput = {"clients": args.clients, "requests": n, "seconds": elapsed,
                  "requests_per_s": n / elapsed, **{k: v for k, v in percentiles(times).items()
                                                    if k != "n"},
                  "mean_batch_size": (after["requests"] - before["requests"]) / batches,
                  "max_batch_size": after["max_batch_size"]}
    print(f"throughput: {throughput}", flush=True)

    result = {
        "date": stamp(),
        "machine": machine(),
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]),
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
        "auth": auth,
        "overload": overload,
        "drain": drain,
        "stop_exit_codes": exit_codes,
        "key_in_logs": key_logged,
        "text_in_logs": text_logged,
        "quick": args.quick,
        "loadavg": [load_start, os.getloadavg()[0]],
    }
    markdown = render_markdown(result)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_JSON, json.dumps(result, indent=2) + "\n")
    write_section("serve", markdown)  # benchmarks/results/serve.md, and RESULTS.md rebuilt
    print(markdown)


if __name__ == "__main__":
    main()
