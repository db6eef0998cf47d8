"""Extraction benchmark for the pretrained encoders (issue 4).

Measures, on this machine, and writes ``benchmarks/results/extraction.md`` (+ ``.json``)
and the matching section of ``benchmarks/RESULTS.md``:

1. **Throughput vs the ceiling**, per pretrained encoder: ``mmfuse.extract_features`` on
   pre-decoded items (pixel arrays, strings, (waveform, rate) pairs; no cache) against the
   raw model on the same items, already turned into model-input tensors (the ceiling:
   nothing but ``InferenceSession.run`` in a loop; for wordllama, which has no ONNX model,
   the ``wordllama`` package's own ``embed``). mmfuse still does its preprocessing (resize /
   normalise, tokenise, mel spectrograms) in its worker threads; the ceiling does not.
   Runs alternate (raw, mmfuse) to share the machine's load; medians and the ratio of
   medians are reported.
2. **Image end to end** (JPEG decode included) on the sign-digits photos: images/s.
3. **Cache**: cold run (empty cache: compute + write) against warm run (all hits).
4. **Memory flat in N**: peak RSS of a child process streaming 2,000 vs 20,000 distinct
   JPEGs through ``iter_features`` into a fresh feature cache.

Usage::

    PYTHONPATH=src python benchmarks/bench_extraction.py            # full (~15-25 min)
    PYTHONPATH=src python benchmarks/bench_extraction.py --quick    # smoke run (~3 min)

The data comes from ``$MMFUSE_DATA`` (default ``../shared/data``), read only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from _common import write_section  # noqa: E402
from mmfuse.cache import FeatureCache  # noqa: E402
from mmfuse.encoders import create_encoder  # noqa: E402
from mmfuse.extract import extract_features, iter_features  # noqa: E402

DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))
RESULTS_MD = HERE / "results" / "extraction.md"
RESULTS_JSON = HERE / "results" / "extraction.json"


# -- data ------------------------------------------------------------------------------------


def sign_digit_paths() -> list[str]:
    paths = sorted(str(p) for p in (DATA / "sign-digits" / "Dataset").glob("*/*.JPG"))
    if not paths:
        sys.exit(f"no sign-digits photos under {DATA}; set MMFUSE_DATA")
    # Interleave the classes so that any prefix is a fair sample.
    by_class: dict[str, list[str]] = {}
    for p in paths:
        by_class.setdefault(Path(p).parent.name, []).append(p)
    groups = list(by_class.values())
    return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


def fsdd_paths() -> list[str]:
    return sorted(str(p) for p in (DATA / "fsdd" / "recordings").glob("*.wav"))


def tuxpaint_texts() -> list[str]:
    texts = []
    for path in sorted((DATA / "tuxpaint" / "stamps").rglob("*.txt")):
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()
        if first and first[0].strip():
            texts.append(first[0].strip())
    return texts


# -- timing helpers --------------------------------------------------------------------------


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- 1. throughput vs the raw session --------------------------------------------------------


def throughput_cases(quick: bool) -> list[dict]:
    """Per encoder: the items mmfuse gets, and a raw() closure running the bare model."""
    from mmfuse.preprocess.audio import load_audio
    from mmfuse.preprocess.image import load_image

    n_img, n_txt, n_aud = (64, 128, 48) if quick else (256, 512, 192)
    cases = []

    enc = create_encoder("efficientnet-lite0").load()
    arrays = [np.asarray(load_image(p)) for p in sign_digit_paths()[:n_img]]
    tensors = [np.stack([enc.prepare(a) for a in arrays[i:i + 32]])
               for i in range(0, len(arrays), 32)]

    def raw_image(enc=enc, tensors=tensors):
        for batch in tensors:
            enc._session.run(None, {enc._input: batch})

    cases.append({"name": "efficientnet-lite0", "encoder": enc, "items": arrays,
                  "raw": raw_image, "unit": "images",
                  "items_desc": f"{len(arrays)} sign-digits photos, decoded to RGB arrays"})

    texts = tuxpaint_texts()
    enc = create_encoder("minilm").load()
    sample = (texts * (1 + n_txt // len(texts)))[:n_txt]
    batches = []
    for i in range(0, len(sample), 32):
        ids = [enc.prepare(t) for t in sample[i:i + 32]]
        width = max(map(len, ids))
        input_ids = np.zeros((len(ids), width), np.int64)
        mask = np.zeros_like(input_ids)
        for r, row in enumerate(ids):
            input_ids[r, :len(row)], mask[r, :len(row)] = row, 1
        batches.append({"input_ids": input_ids, "attention_mask": mask,
                        "token_type_ids": np.zeros_like(input_ids)})

    def raw_minilm(enc=enc, batches=batches):
        for feeds in batches:
            enc._session.run(None, feeds)

    cases.append({"name": "minilm", "encoder": enc, "items": sample, "raw": raw_minilm,
                  "unit": "texts", "items_desc": f"{len(sample)} Tux Paint descriptions"})

    import logging

    from wordllama import WordLlama  # the package's own inference = the ceiling

    logging.getLogger().setLevel(logging.WARNING)  # wordllama turns root logging to INFO
    import wordllama

    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    enc = create_encoder("wordllama").load()
    many = texts * (4 if quick else 20)
    cleaned = [enc.prepare(t) for t in many]

    def raw_wordllama(model=model, cleaned=cleaned):
        for i in range(0, len(cleaned), 256):
            model.embed(cleaned[i:i + 256], batch_size=256)

    cases.append({"name": "wordllama", "encoder": enc, "items": many, "raw": raw_wordllama,
                  "unit": "texts", "batch_size": 256,
                  "items_desc": f"{len(many)} Tux Paint descriptions (the {len(texts)} "
                                f"repeated); ceiling = wordllama's own WordLlama.embed"})

    wavs = fsdd_paths()[::max(1, len(fsdd_paths()) // n_aud)][:n_aud]
    enc = create_encoder("speech-embedding").load()
    waves16 = [load_audio(p, rate=16000) for p in wavs]
    specs = [enc.melspectrogram(w) for w in waves16]
    pcm = [np.pad(np.clip(np.rint(w * 32768.0), -32768, 32767),
                  (0, max(0, enc.min_samples - len(w))))[None].astype(np.float32)
           for w in waves16]
    windows = [np.concatenate([enc._windows(s) for s in specs[i:i + 32]])[..., None]
               .astype(np.float32) for i in range(0, len(specs), 32)]

    def raw_speech(enc=enc, pcm=pcm, windows=windows):
        for x in pcm:  # the mel model is part of the model: the ceiling runs it too
            enc._melspec.run(None, {"input": x})
        for batch in windows:
            enc._session.run(None, {"input_1": batch})

    cases.append({"name": "speech-embedding", "encoder": enc,
                  "items": [(w, 16000) for w in waves16], "raw": raw_speech, "unit": "clips",
                  "items_desc": f"{len(wavs)} FSDD clips, decoded at 16 kHz"})

    enc = create_encoder("sound-effects").load()
    waves44 = [load_audio(p, rate=44100) for p in wavs]
    blocks = [np.concatenate([enc._blocks(enc.spectrogram(w)) for w in waves44[i:i + 32]])
              .astype(np.float32) for i in range(0, len(waves44), 32)]

    def raw_sfx(enc=enc, blocks=blocks):
        for batch in blocks:
            enc._session.run(None, {enc._input: batch})

    cases.append({"name": "sound-effects", "encoder": enc,
                  "items": [(w, 44100) for w in waves44], "raw": raw_sfx, "unit": "clips",
                  "items_desc": f"{len(wavs)} FSDD clips, decoded at 44.1 kHz"})
    return cases


def bench_throughput(quick: bool, repeats: int) -> list[dict]:
    rows = []
    for case in throughput_cases(quick):
        enc, items, n = case["encoder"], case["items"], len(case["items"])
        batch = case.get("batch_size", 32)

        def run_mmfuse(enc=enc, items=items, batch=batch):
            extract_features(enc, items, cache=None, batch_size=batch, workers=2)

        run_mmfuse(), case["raw"]()  # warm up both
        raw_t, mm_t = [], []
        for _ in range(repeats):
            raw_t.append(timed(case["raw"]))
            mm_t.append(timed(run_mmfuse))
        raw_rate, mm_rate = n / median(raw_t), n / median(mm_t)
        rows.append({"encoder": case["name"], "items": case["items_desc"], "n": n,
                     "unit": case["unit"], "raw_per_s": raw_rate, "mmfuse_per_s": mm_rate,
                     "ratio": mm_rate / raw_rate, "raw_runs_s": raw_t, "mmfuse_runs_s": mm_t})
        print(f"  {case['name']:<20} raw {raw_rate:9.1f}/s  mmfuse {mm_rate:9.1f}/s  "
              f"ratio {mm_rate / raw_rate:.3f}", flush=True)
    return rows


# -- 2. image end to end ---------------------------------------------------------------------


def bench_image_end_to_end(quick: bool, repeats: int) -> dict:
    paths = sign_digit_paths()[:256 if quick else 1024]
    enc = create_encoder("efficientnet-lite0").load()
    extract_features(enc, paths[:32], cache=None)
    out: dict = {"n": len(paths)}
    times: dict[int, list[float]] = {2: [], 0: []}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for workers in times:
            times[workers].append(timed(
                lambda w=workers: extract_features(enc, paths, cache=None, workers=w)))
    for workers, runs in times.items():
        out[f"workers_{workers}_per_s"] = len(paths) / median(runs)
        out[f"workers_{workers}_runs_s"] = runs
    print(f"  end to end: {out['workers_2_per_s']:.1f} images/s (workers=2), "
          f"{out['workers_0_per_s']:.1f} (workers=0)", flush=True)
    return out


# -- 3. cache --------------------------------------------------------------------------------


def bench_cache(quick: bool, repeats: int) -> list[dict]:
    images = sign_digit_paths()[:128 if quick else 512]
    wavs = fsdd_paths()[::10][:64 if quick else 300]
    texts = tuxpaint_texts()
    cases = [("efficientnet-lite0", images, "sign-digits JPEG paths"),
             ("minilm", texts, "Tux Paint descriptions"),
             ("wordllama", texts, "Tux Paint descriptions"),
             ("speech-embedding", wavs, "FSDD WAV paths"),
             ("sound-effects", wavs, "FSDD WAV paths")]
    rows = []
    for name, items, desc in cases:
        enc = create_encoder(name).load()
        cold, warm = [], []
        for _ in range(repeats):
            root = tempfile.mkdtemp(prefix="mmfuse-bench-cache-")
            try:
                store = FeatureCache(root)
                cold.append(timed(functools.partial(extract_features, enc, items,
                                                    cache=store)))
                stats: dict = {}
                warm.append(timed(functools.partial(extract_features, enc, items,
                                                    cache=store, stats=stats)))
                assert stats["cache_hits"] == stats["present"], stats
                store.close()
            finally:
                shutil.rmtree(root, ignore_errors=True)
        row = {"encoder": name, "items": f"{len(items)} {desc}", "n": len(items),
               "cold_s": median(cold), "warm_s": median(warm),
               "speedup": median(cold) / median(warm), "cold_runs_s": cold, "warm_runs_s": warm,
               "cached_by_default": bool(getattr(enc, "cache_worthy", True))}
        rows.append(row)
        print(f"  cache {name:<20} cold {row['cold_s']:.3f}s warm {row['warm_s']:.4f}s "
              f"speedup {row['speedup']:.1f}x", flush=True)
    return rows


# -- 4. memory flat in N ---------------------------------------------------------------------


def make_distinct_jpegs(folder: Path, count: int) -> list[str]:
    """``count`` distinct JPEGs from the sign-digits photos (variant k: shifted crop)."""
    from PIL import Image

    sources = sign_digit_paths()
    paths = []
    for i in range(count):
        src, variant = sources[i % len(sources)], i // len(sources)
        target = folder / f"{i:05d}.jpg"
        paths.append(str(target))
        if target.exists():
            continue
        with Image.open(src) as img:
            img = img.convert("RGB")
            if max(img.size) > 400:
                img = img.resize((100, 100))
            w, h = img.size
            img.crop((variant % 5, variant // 5, w - 5 + variant % 5, h - 5 + variant // 5)) \
                .save(target, quality=90)
    return paths


def rss_child(count: int, folder: str, cache_root: str) -> None:
    paths = sorted(str(p) for p in Path(folder).glob("*.jpg"))[:count]
    enc = create_encoder("efficientnet-lite0").load()
    store = FeatureCache(cache_root)
    start = time.perf_counter()
    n = 0
    for batch in iter_features(enc, paths, cache=store, batch_size=32, workers=2):
        n += len(batch.rows)
    seconds = time.perf_counter() - start
    print(json.dumps({"n": count, "extracted": n, "peak_rss_mb": peak_rss_kb() / 1024,
                      "seconds": seconds, "per_s": n / seconds}))


def peak_rss_kb() -> int:
    """This process's own peak RSS. Not ``getrusage``'s ru_maxrss: on Linux it survives
    ``execve``, so a child started from a big parent reports the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_rss(quick: bool) -> dict:
    small, large = (500, 5000) if quick else (2000, 20000)
    folder = Path(tempfile.gettempdir()) / "mmfuse-bench-jpegs"
    folder.mkdir(exist_ok=True)
    print(f"  writing {large} distinct JPEGs to {folder} ...", flush=True)
    make_distinct_jpegs(folder, large)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = {}
    for count in (small, large):
        cache_root = tempfile.mkdtemp(prefix="mmfuse-bench-rss-")
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(count), str(folder), cache_root],
                capture_output=True, text=True, env=env, check=True)
        finally:
            shutil.rmtree(cache_root, ignore_errors=True)
        out[str(count)] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  RSS {count}: {out[str(count)]['peak_rss_mb']:.0f} MB "
              f"({out[str(count)]['per_s']:.0f} images/s)", flush=True)
    out["small"], out["large"] = small, large
    out["ratio"] = out[str(large)]["peak_rss_mb"] / out[str(small)]["peak_rss_mb"]
    return out


# -- report ----------------------------------------------------------------------------------


def render(results: dict) -> str:
    env = results["environment"]
    lines = [
        "## Feature extraction (pretrained encoders)",
        "",
        f"Measured by `benchmarks/bench_extraction.py` on {env['when']}: {env['cpus']} CPUs "
        f"({env['cpu']}), Python {env['python']}, onnxruntime {env['onnxruntime']}, "
        f"load average at start {env['load_average']}. The machine is shared, so every "
        f"number is a median of {results['repeats']} runs and each ratio compares runs "
        "interleaved in the same process.",
        "",
        "### Throughput: mmfuse against the bare model (target ≥ 0.90)",
        "",
        "Ceiling: `InferenceSession.run` in a loop on ready-made input tensors (batches of 32"
        "; wordllama: its own `WordLlama.embed`). mmfuse: `extract_features(..., cache=None,"
        " workers=2)` on the same pre-decoded items, doing its own preprocessing in its "
        "worker threads.",
        "",
        "| encoder | items | ceiling /s | mmfuse /s | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for row in results["throughput"]:
        lines.append(f"| `{row['encoder']}` | {row['items']} | {row['raw_per_s']:.1f} | "
                     f"{row['mmfuse_per_s']:.1f} | **{row['ratio']:.2f}** |")
    e2e = results["end_to_end"]
    lines += [
        "",
        "### Image end to end (JPEG decode included)",
        "",
        f"`efficientnet-lite0` on {e2e['n']} sign-digits photos (paths; no cache): "
        f"**{e2e['workers_2_per_s']:.1f} images/s** with 2 decoding workers, "
        f"{e2e['workers_0_per_s']:.1f} images/s decoding in the calling thread (workers=0).",
        "",
        "### Feature cache: cold against warm (target ≥ 20×)",
        "",
        "Cold: empty cache (compute + write). Warm: the same inputs again (hash the file "
        "bytes or text, look up, no decoding).",
        "",
        "| encoder | items | cold s | warm s | speedup | cached by default |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in results["cache"]:
        default = "yes" if row["cached_by_default"] else "no (explicit FeatureCache here)"
        lines.append(f"| `{row['encoder']}` | {row['items']} | {row['cold_s']:.3f} | "
                     f"{row['warm_s']:.4f} | **{row['speedup']:.1f}×** | {default} |")
    rss = results.get("rss")
    if rss:
        small, large = rss[str(rss["small"])], rss[str(rss["large"])]
        lines += [
            "",
            "### Memory flat in N (target: within 10%)",
            "",
            "Peak RSS of a fresh process streaming distinct JPEGs through `iter_features` "
            "(efficientnet-lite0, workers=2, batch 32) into a fresh feature cache:",
            "",
            "| images | peak RSS MB | images/s |",
            "|---:|---:|---:|",
            f"| {rss['small']:,} | {small['peak_rss_mb']:.0f} | {small['per_s']:.1f} |",
            f"| {rss['large']:,} | {large['peak_rss_mb']:.0f} | {large['per_s']:.1f} |",
            "",
            f"Ratio {rss['large']:,} / {rss['small']:,}: **{rss['ratio']:.3f}**. "
            f"(`extract_features` also returns the (n, 1280) float32 matrix: 5 KB per image "
            f"on top, which is the result itself.)",
        ]
    return "\n".join(lines) + "\n"


def write_results(results: dict) -> None:
    """Write this benchmark's JSON and section; RESULTS.md is rebuilt from the sections."""
    from mmfuse._io import atomic_write_text

    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_JSON, json.dumps(results, indent=1, default=float))
    write_section("extraction", render(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only", choices=["throughput", "e2e", "cache", "rss"], nargs="*")
    parser.add_argument("--rss-child", nargs=3, metavar=("N", "FOLDER", "CACHE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(int(args.rss_child[0]), args.rss_child[1], args.rss_child[2])
        return
    os.environ.setdefault("MMFUSE_CACHE", str(Path(tempfile.gettempdir()) / "mmfuse-bench-home"))
    repeats = args.repeats or (3 if args.quick else 5)
    parts = set(args.only or ["throughput", "e2e", "cache", "rss"])
    import onnxruntime

    results: dict = {
        "repeats": repeats, "quick": args.quick,
        "environment": {
            "when": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
    }
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() and args.only else {}
    if "throughput" in parts:
        print("throughput:", flush=True)
        results["throughput"] = bench_throughput(args.quick, repeats)
    if "e2e" in parts:
        print("image end to end:", flush=True)
        results["end_to_end"] = bench_image_end_to_end(args.quick, max(3, repeats // 2))
    if "cache" in parts:
        print("cache:", flush=True)
        results["cache"] = bench_cache(args.quick, 3)
    if "rss" in parts and not args.skip_rss:
        print("memory:", flush=True)
        results["rss"] = bench_rss(args.quick)
    for key in ("throughput", "end_to_end", "cache", "rss"):
        if key not in results and key in old:
            results[key] = old[key]
    if all(k in results for k in ("throughput", "end_to_end", "cache")):
        write_results(results)
        print(f"wrote {RESULTS_MD} and rebuilt {HERE / 'RESULTS.md'}")
    else:
        print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
