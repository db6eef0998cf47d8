"""GPU path benchmark (issue 17): image features end to end, precision, and the learned heads.

Measures on this machine, and writes ``benchmarks/results/gpu.md`` (+ ``.json``) and the
matching section of ``benchmarks/RESULTS.md``:

1. **Decode ceiling**: JPEG decode + resize + crop (the encoder's ``prepare``) of the
   sign-digits photos, images/s with W worker threads and with W worker processes.
2. **Model ceiling**: the model alone on ready-made uint8 batches held in memory (CPU: the
   ONNX export; CUDA: the PyTorch model at fp32 and fp16, per batch size).
3. **End to end**: JPEG files on disk -> ``extract_features`` -> features written into a
   fresh feature cache, images/s, per precision and batch size (CPU decode threads; GPU
   decode with ``torchvision.io.decode_jpeg(device="cuda")`` when torchvision imports),
   with the GPU's utilisation (pynvml or nvidia-smi, sampled every 50 ms) and peak memory.
4. **Agreement**: features of each path against the CPU ONNX path (max abs difference,
   lowest cosine) and the downstream accuracy of a logistic regression on them (the same
   stratified 5 folds; per-fold paired difference), target within 0.5 point.
5. **Learned heads**: seconds per training epoch of the ``gmu`` head on 50,000 rows of
   synthetic features (1280 + 384 + 96 dims, 10 classes), CPU (a few epochs) and CUDA.

Without CUDA only the CPU variants run (on ``--n`` photos, default 300) and the section says
plainly that nothing was measured on a GPU.

Usage::

    PYTHONPATH=src python benchmarks/bench_gpu.py             # 300 photos on CPU (~10 min here)
    PYTHONPATH=src python benchmarks/bench_gpu.py --n 2000    # on a GPU host

The data comes from ``$MMFUSE_DATA`` (default ``../shared/data``), read only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from _common import RESULTS_DIR, machine, stamp, write_section  # noqa: E402
from mmfuse.cache import FeatureCache  # noqa: E402
from mmfuse.devices import cuda_available  # noqa: E402
from mmfuse.encoders import create_encoder  # noqa: E402
from mmfuse.extract import extract_features  # noqa: E402

DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- data ----------------------------------------------------------------------------------------


def photos(n: int) -> tuple[list[str], np.ndarray]:
    """``n`` sign-digits photos (classes interleaved, so any prefix is balanced) + labels,
    through the dataset loader."""
    from mmfuse.data.datasets import load_dataset

    X, y, _ = load_dataset("sign-digits", DATA)
    paths = X["image"].tolist()
    y = np.asarray(y)
    by_class = {c: np.flatnonzero(y == c).tolist() for c in sorted(set(y.tolist()))}
    order = [rows[i] for i in range(max(map(len, by_class.values())))
             for rows in by_class.values() if i < len(rows)][:n]
    return [paths[i] for i in order], y[order]


# -- 1. decode ceiling ----------------------------------------------------------------------------

_WORKER_ENCODER = None


def _init_worker() -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = create_encoder("efficientnet-lite0")


def _decode_chunk(chunk: list[str]) -> np.ndarray:
    from mmfuse.encoders.pretrained import EfficientNetLite0Encoder

    # prepare without loading the model: decode + resize + crop only
    return np.stack([EfficientNetLite0Encoder._prepare(_WORKER_ENCODER, p) for p in chunk])


def bench_decode(paths: list[str], workers: int, repeats: int) -> dict:
    chunks = [paths[i:i + 32] for i in range(0, len(paths), 32)]
    out: dict = {"workers": workers, "n": len(paths)}
    _init_worker()
    pool_p = ProcessPoolExecutor(workers, initializer=_init_worker)
    list(pool_p.map(_decode_chunk, chunks[:workers]))  # start the processes
    times: dict[str, list[float]] = {"threads": [], "processes": []}
    try:
        for _ in range(repeats):  # interleaved: both see the same machine load
            with ThreadPoolExecutor(workers) as pool_t:
                start = time.perf_counter()
                list(pool_t.map(_decode_chunk, chunks))
                times["threads"].append(time.perf_counter() - start)
            start = time.perf_counter()
            list(pool_p.map(_decode_chunk, chunks))
            times["processes"].append(time.perf_counter() - start)
    finally:
        pool_p.shutdown()
    for kind, runs in times.items():
        out[f"{kind}_per_s"] = len(paths) / median(runs)
        out[f"{kind}_runs_s"] = runs
    print(f"  decode x{workers}: threads {out['threads_per_s']:.0f}/s, processes "
          f"{out['processes_per_s']:.0f}/s", flush=True)
    return out


# -- GPU utilisation sampler ----------------------------------------------------------------------


class GpuSampler:
    """Mean GPU utilisation (%) while the block runs: pynvml if installed, else nvidia-smi."""

    def __init__(self, index: int = 0):
        self.index, self.samples, self.source = index, [], None
        self._stop = threading.Event()

    def _read(self):
        try:
            import pynvml

            if self.source is None:
                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
                self.source = "pynvml"
            return float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except ImportError:
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        self.source = "nvidia-smi"
        text = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        return float(text) if text else None

    def __enter__(self):
        def loop():
            while not self._stop.wait(0.05):
                value = self._read()
                if value is None:
                    return
                self.samples.append(value)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self):
        return float(np.mean(self.samples)) if self.samples else None


# -- 2. model ceiling -----------------------------------------------------------------------------


def bench_model(pixels: np.ndarray, device: str, precision: str, batch: int,
                repeats: int) -> dict:
    """The model alone on in-memory uint8 batches (the image count of ``pixels``, tiled)."""
    enc = create_encoder("efficientnet-lite0", device=device, precision=precision,
                         batch_size=batch, threads=None if device != "cpu" else 2).load()
    n = max(len(pixels), batch * (8 if device != "cpu" else 1))
    tiled = np.concatenate([pixels] * (1 + n // len(pixels)))[:n]
    batches = [tiled[i:i + batch] for i in range(0, n, batch)]

    def run():
        for b in batches:
            enc._embed_batch(list(b))

    run()  # warm up (cuDNN autotune, ORT allocations)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        runs.append(time.perf_counter() - start)
    rate = n / median(runs)
    print(f"  model {device} {precision} batch {batch}: {rate:.0f} images/s", flush=True)
    return {"device": device, "precision": precision, "batch": batch, "n": n,
            "per_s": rate, "runs_s": runs}


# -- 3. end to end --------------------------------------------------------------------------------


def bench_end_to_end(paths: list[str], device: str, precision: str, batch: int | None,
                     repeats: int, decode: str = "cpu") -> tuple[dict, np.ndarray]:
    """Files on disk -> features in a fresh cache, images/s (median of ``repeats``)."""
    enc = create_encoder("efficientnet-lite0", device=device, precision=precision,
                         batch_size=batch).load()
    runs, util, features = [], [], None
    torch = None
    if device != "cpu":
        import torch
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        root = tempfile.mkdtemp(prefix="mmfuse-bench-gpu-")
        try:
            store = FeatureCache(root)
            stats: dict = {}
            sampler = GpuSampler() if device != "cpu" else None
            start = time.perf_counter()
            if sampler:
                sampler.__enter__()
            try:
                if decode == "gpu":
                    features = gpu_decode_extract(enc, paths, store)
                else:
                    features, present, _ = extract_features(enc, paths, cache=store,
                                                            stats=stats)
                    assert present.all() and stats["computed"] == len(paths), stats
            finally:
                if sampler:
                    sampler.__exit__(None, None, None)
            runs.append(time.perf_counter() - start)
            if sampler:
                util.append(sampler.mean)
            store.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    row = {"device": device, "precision": precision, "batch": enc.effective_batch_size,
           "decode": decode, "workers": enc.decode_workers if decode == "cpu" else None,
           "n": len(paths), "per_s": len(paths) / median(runs), "runs_s": runs}
    if torch is not None:
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu_util_mean"] = (median([u for u in util if u is not None])
                                if any(u is not None for u in util) else None)
    print(f"  end to end {device} {precision} batch {row['batch']} decode {decode}: "
          f"{row['per_s']:.0f} images/s", flush=True)
    return row, features


def torchvision_gpu_decode() -> bool:
    try:
        import torchvision.io  # noqa: F401
    except Exception:  # noqa: BLE001 - torchvision may be absent or broken beside this torch
        return False
    return cuda_available()


def gpu_decode_extract(enc, paths: list[str], store: FeatureCache) -> np.ndarray:
    """JPEG bytes -> nvJPEG on the GPU -> resize (short side 224, antialiased bilinear) +
    centre crop on the GPU -> the encoder's PyTorch model; features into the cache."""
    import torch
    import torchvision.io as tio
    import torch.nn.functional as F

    from mmfuse.cache import content_key

    size, device = enc.image_size, torch.device(enc.device)
    module = enc._runner.module
    out = np.empty((len(paths), enc.dim), np.float32)
    batch = enc.effective_batch_size
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(enc.precision)
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        data = [tio.read_file(p) for p in chunk]
        images = tio.decode_jpeg(data, device=device, mode=tio.ImageReadMode.RGB)
        crops = []
        for img in images:  # (3, H, W) uint8
            h, w = img.shape[1:]
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            img = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear",
                                antialias=True, align_corners=False)[0]
            top, left = (nh - size) // 2, (nw - size) // 2
            crops.append(img[:, top:top + size, left:left + size].round().clamp(0, 255))
        pixels = torch.stack(crops).to(torch.uint8).permute(0, 2, 3, 1)  # NHWC
        with torch.inference_mode():
            if dtype is None:
                feats = module(pixels)
            else:
                with torch.autocast("cuda", dtype=dtype):
                    feats = module(pixels)
        out[start:start + len(chunk)] = feats.float().cpu().numpy()
        store.put_many(enc.fingerprint + "-gpudecode",
                       [content_key(p, "image") for p in chunk], out[start:start + len(chunk)])
    return out


# -- 4. agreement and downstream accuracy --------------------------------------------------------


def agreement(reference: np.ndarray, other: np.ndarray, y: np.ndarray,
              with_accuracy: bool = True) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cos = (reference * other).sum(1) / (np.linalg.norm(reference, axis=1)
                                         * np.linalg.norm(other, axis=1))
    out = {"n": len(reference), "max_abs_diff": float(np.abs(reference - other).max()),
           "max_abs_reference": float(np.abs(reference).max()), "min_cosine": float(cos.min())}
    if not with_accuracy:
        return out
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(reference, y))
    acc = {"reference": [], "other": []}
    for train, test in folds:
        for key, X in (("reference", reference), ("other", other)):
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
            model.fit(X[train], y[train])
            acc[key].append(float((model.predict(X[test]) == y[test]).mean()))
    diff = np.array(acc["other"]) - np.array(acc["reference"])
    return {**out, "accuracy_reference": float(np.mean(acc["reference"])),
            "accuracy": float(np.mean(acc["other"])),
            "accuracy_diff_points": float(100 * diff.mean()),
            "per_fold_diff_points": (100 * diff).tolist()}


# -- 5. learned heads -----------------------------------------------------------------------------


def bench_heads(device: str, rows: int, epochs: int) -> dict:
    from mmfuse.fusion import create_fusion

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, rows)
    views = {}
    for m, d in (("image", 1280), ("text", 384), ("audio", 96)):
        x = rng.normal(size=(rows, d)).astype(np.float32)
        x[:, :10] += 1.5 * np.eye(10, dtype=np.float32)[y]  # every view knows the label a bit
        views[m] = x
    head = create_fusion("gmu", device=device, max_epochs=epochs, patience=epochs + 1,
                         n_members=1, random_state=0)
    start = time.perf_counter()
    head.fit(views, y)
    seconds = time.perf_counter() - start
    n_epochs = head.n_epochs_[0]
    per_epoch = seconds / n_epochs
    print(f"  heads gmu {device}: {per_epoch:.2f} s/epoch ({n_epochs} epochs, {rows} rows)",
          flush=True)
    return {"device": device, "rows": rows, "epochs": n_epochs, "seconds": seconds,
            "seconds_per_epoch": per_epoch, "batch_size": head.batch_size}


# -- report ---------------------------------------------------------------------------------------


def load(values: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in values)


def render(r: dict) -> str:
    env = r["environment"]
    gpu = env["gpu"]
    lines = ["## GPU path (issue 17)", "",
             f"Measured by `benchmarks/bench_gpu.py` on {env['when']}: {env['machine']}; "
             f"torch {env['torch']}, onnxruntime {env['onnxruntime']}; "
             f"GPU: {gpu or 'none'}; torchvision GPU decode: "
             f"{'available' if env['gpu_decode'] else 'not available'}. Load average at "
             f"start {load(env['load_average'])}"
             + (f", at the end {load(r['load_average_end'])}" if "load_average_end" in r else "")
             + " (a shared machine: rates are medians of interleaved runs).", ""]
    if not gpu:
        lines += ["**No GPU was measured: this machine has no CUDA device.** Only the CPU "
                  "variants below ran; the CUDA rows (fp32/fp16 end to end, GPU decode, "
                  "utilisation, peak GPU memory, head training on CUDA) appear when the "
                  "script runs on a machine with CUDA. The issue's GPU targets are not yet "
                  "measured.", ""]
    d = r["decode"]
    lines += ["### Decode ceiling (JPEG decode + resize + crop, no model)", "",
              f"{d['n']} sign-digits photos, {d['workers']} workers, median of "
              f"{r['repeats']} interleaved runs: **{d['threads_per_s']:.0f} images/s with "
              f"threads**, {d['processes_per_s']:.0f} images/s with processes.", "",
              "### Model alone (in-memory uint8 batches)", "",
              "| device | precision | batch | images/s |", "|---|---|---:|---:|"]
    for m in r["model"]:
        lines.append(f"| {m['device']} | {m['precision']} | {m['batch']} | {m['per_s']:.0f} |")
    lines += ["", "### End to end: JPEG files on disk -> features in a fresh cache", "",
              "| device | precision | batch | decode | images/s | vs decode ceiling | "
              "GPU util % | peak GPU MiB |", "|---|---|---:|---|---:|---:|---:|---:|"]
    ceiling = max(d["threads_per_s"], d["processes_per_s"])
    for e in r["end_to_end"]:
        util = e.get("gpu_util_mean")
        util_text = "" if util is None else f"{util:.0f}"
        peak = e.get("peak_gpu_mib")
        peak_text = "" if peak is None else f"{peak:.0f}"
        workers = f" x{e['workers']}" if e.get("workers") else ""
        lines.append(
            f"| {e['device']} | {e['precision']} | {e['batch']} | {e['decode']}{workers} | "
            f"{e['per_s']:.0f} | {e['per_s'] / ceiling:.2f} | {util_text} | {peak_text} |")
    lines += ["", "### Features against the CPU ONNX path, and downstream accuracy", "",
              f"Logistic regression (standardised features, C=0.1) on the {r['n']} photos, "
              "the same stratified 5 folds for both feature sets; target: accuracy within "
              "0.5 point.", "",
              "| features | photos | max abs diff (max abs value) | min cosine | accuracy | "
              "ONNX fp32 accuracy | difference (points) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, a in r["agreement"].items():
        acc = (f"{a['accuracy']:.3f} | {a['accuracy_reference']:.3f} | "
               f"{a['accuracy_diff_points']:+.2f}" if "accuracy" in a
               else "not measured (subset) | | ")
        lines.append(f"| {name} | {a['n']} | {a['max_abs_diff']:.2g} "
                     f"({a['max_abs_reference']:.2f}) | {a['min_cosine']:.5f} | {acc} |")
    lines += ["", "### Learned heads: training time at 50,000 rows", "",
              "`gmu` head, one member, batch 128, synthetic features (1280 + 384 + 96 dims, "
              "10 classes); seconds per epoch (fixed epochs, no early stop).", "",
              "| device | epochs | s/epoch |", "|---|---:|---:|"]
    for h in r["heads"]:
        lines.append(f"| {h['device']} | {h['epochs']} | {h['seconds_per_epoch']:.2f} |")
    if r.get("heads_speedup"):
        lines += ["", f"CUDA over CPU: **{r['heads_speedup']:.1f}x** (target ≥ 5x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="photos (default 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--head-rows", type=int, default=50_000)
    parser.add_argument("--cpu-head-epochs", type=int, default=2)
    parser.add_argument("--bf16-n", type=int, default=64,
                        help="photos for bf16 on the CPU (no accuracy unless all of --n)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the section from results/gpu.json (no measuring)")
    args = parser.parse_args()
    if args.render_only:
        import json

        write_section("gpu", render(json.loads((RESULTS_DIR / "gpu.json").read_text())))
        return

    import onnxruntime
    import torch

    has_cuda = cuda_available()
    paths, y = photos(args.n)
    enc = create_encoder("efficientnet-lite0")
    env = {"when": stamp(), "machine": machine(), "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
           "gpu_decode": torchvision_gpu_decode(), "load_average": os.getloadavg()}
    print(f"{env['machine']}; GPU: {env['gpu']}", flush=True)
    results: dict = {"environment": env, "n": len(paths), "repeats": args.repeats}

    results["decode"] = bench_decode(paths, enc.decode_workers if not has_cuda else
                                     create_encoder("efficientnet-lite0",
                                                    device="cuda").decode_workers,
                                     args.repeats)
    pixels = np.stack([_decode_chunk([p])[0] for p in paths[:64]])
    results["model"] = [bench_model(pixels, "cpu", "fp32", 32, args.repeats)]
    if has_cuda:
        for precision in ("fp32", "fp16"):
            for batch in (128, 256, 512, 1024):
                results["model"].append(bench_model(pixels, "cuda", precision, batch,
                                                    args.repeats))

    ends, feats = [], {}
    row, feats["onnx-fp32-cpu"] = bench_end_to_end(paths, "cpu", "fp32", None, args.repeats)
    ends.append(row)
    if has_cuda:
        for precision in ("fp32", "fp16"):
            for batch in (256, 1024):
                row, f = bench_end_to_end(paths, "cuda", precision, batch, args.repeats)
                ends.append(row)
                feats.setdefault(f"torch-{precision}-cuda", f)
            if env["gpu_decode"]:
                row, f = bench_end_to_end(paths, "cuda", precision, 256, args.repeats,
                                          decode="gpu")
                ends.append(row)
                feats[f"torch-{precision}-cuda-gpudecode"] = f
    results["end_to_end"] = ends

    # The PyTorch path on the CPU: fp32 (the module CUDA runs) on every photo, and bf16
    # autocast on the first --bf16-n (a CPU without native bf16 emulates it, slowly).
    from mmfuse.encoders.gpu import TorchRunner

    prepared = [_decode_chunk([p])[0] for p in paths]
    base = create_encoder("efficientnet-lite0", threads=2).load()
    subsets = {}
    for precision, count in (("fp32", len(prepared)), ("bf16", args.bf16_n)):
        runner = TorchRunner(base.torch_module(), "cpu", precision, channels_last=True,
                             threads=2)
        start = time.perf_counter()
        part = prepared[:count]
        feats[f"torch-{precision}-cpu"] = np.concatenate(
            [runner.run_items(part[i:i + 32]) for i in range(0, len(part), 32)])
        subsets[f"torch-{precision}-cpu"] = len(part)
        print(f"  torch {precision} cpu: {len(part) / (time.perf_counter() - start):.1f} "
              "images/s", flush=True)
    reference = feats.pop("onnx-fp32-cpu")
    results["agreement"] = {}
    for name, f in feats.items():
        rows = subsets.get(name, len(reference))
        results["agreement"][name] = agreement(reference[:rows], f, y[:rows],
                                               with_accuracy=rows == len(reference))
    for name, a in results["agreement"].items():
        print(f"  {name}: max abs diff {a['max_abs_diff']:.3g}, min cosine "
              f"{a['min_cosine']:.5f}, accuracy {a.get('accuracy')} vs "
              f"{a.get('accuracy_reference')}", flush=True)

    heads = [bench_heads("cpu", args.head_rows, args.cpu_head_epochs)]
    if has_cuda:
        heads.append(bench_heads("cuda", args.head_rows, 10))
        results["heads_speedup"] = heads[0]["seconds_per_epoch"] / heads[1]["seconds_per_epoch"]
    results["heads"] = heads
    results["load_average_end"] = os.getloadavg()

    from mmfuse._io import atomic_write_json

    RESULTS_DIR.mkdir(exist_ok=True)
    atomic_write_json(RESULTS_DIR / "gpu.json", results)
    write_section("gpu", render(results))
    print(f"wrote {RESULTS_DIR / 'gpu.md'}", flush=True)


if __name__ == "__main__":
    main()
