"""GPU check of the ``paper`` profile: every method at full size, a few fp16 steps at its published batch.

Run on a CUDA machine (one process, one GPU; needs ~20 GB of free disk for the weight folders)::

    python benchmarks/gpu_paper_check.py [--work /tmp/paper-check] [--steps 3] [--methods synapse,gwit]

It writes full-size random-weight folders in the users' layout (SD 2.1, 2.1-base, 1.5 as diffusers
pipelines, OpenCLIP ViT-H/14 local-dir, CLIP ViT-L/14 transformers; published configs,
:func:`eegbench.backbones.weights_fixtures.write_paper_weights` with ``size="full"``) and a
cvpr40-format dataset of made-up EEG (6 subjects × 40 classes), then runs, per method::

    eegbench run --method M --profile paper --dataset cvpr40 --mixed-precision fp16 --max-steps N ...

and prints one table: seconds per optimiser step of every stage (from the run log), generated
images per second, and peak GPU memory (``torch.cuda.max_memory_allocated``, from ``result.json``).
Random weights make the images meaningless: this measures cost, not quality. Everything is
sized to finish in one go in under 10 minutes on one H100/H200-class GPU.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("synapse", "dreamdiffusion", "brainvis", "gwit")
STEP_LINE = re.compile(r"eegbench\.run: (\w+) (\w+): (\d+) steps in ([\d.]+) s")


def _prepare(work: Path) -> tuple[Path, Path, float]:
    import torch

    from eegbench.backbones.weights_fixtures import write_paper_weights
    from eegbench.datasets.cvpr40 import write_synthetic_files

    t0 = time.perf_counter()
    weights, data = work / "weights", work / "data"
    if not (weights / ".complete").is_file():
        with torch.device("cpu"):
            write_paper_weights(weights, size="full")
        (weights / ".complete").write_text("ok\n")
    if not (data / ".complete").is_file():
        write_synthetic_files(data, n_subjects=6, n_classes=40, images_per_class=4, n_out_of_filter=0,
                              fractions=(0.5, 0.25), image_px=64, lengths=(460, 480))
        (data / ".complete").write_text("ok\n")
    return weights, data, time.perf_counter() - t0


def _run(method: str, weights: Path, data: Path, work: Path, steps: int, timeout: float) -> dict:
    runs = work / "runs" / method
    cmd = [sys.executable, "-m", "eegbench", "run", "--method", method, "--profile", "paper", "--dataset", "cvpr40",
           "--data-root", str(data), "--weights-root", str(weights), "--cache-dir", str(work / "cache"),
           "--runs-dir", str(runs), "--mixed-precision", "fp16", "--max-steps", str(steps),
           "--max-test-trials", "8", "--n-samples", "1", "--steps", "20", "--checkpoint-every", "0",
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    row = {"method": method, "rc": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    run_dir = next(p for p in runs.iterdir() if not p.name.startswith("."))
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    log = (run_dir / "log.txt").read_text(encoding="utf-8")
    row["s_per_step"] = {m.group(2): round(float(m.group(4)) / int(m.group(3)), 3)
                         for m in STEP_LINE.finditer(log) if m.group(1) == method}
    n_images = result["protocol"]["n_samples_per_trial"] * len(result["split"]["test"][:8])
    row["gen_images_per_s"] = round(n_images / max(result["durations_s"]["generate"], 1e-9), 3)
    row["peak_gpu_mib"] = result["peak_memory_mb"].get("cuda_max_allocated")
    row["image_size"] = result["protocol"]["image_size"]
    row["trainable"] = result["parameters"]["trainable_total"]
    return row


def main(argv: list[str] | None = None) -> int:
    """Prepare the folders, run every method, print the table; exit 1 if a run failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/eegbench-paper-check"))
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per stage (--max-steps)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per method run")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_paper_check: no CUDA device", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    weights, data, prep = _prepare(args.work)
    print(f"weight folders + data written in {prep:.0f} s", flush=True)
    rows = []
    for method in args.methods.split(","):
        try:
            row = _run(method, weights, data, args.work, args.steps, args.timeout)
        except subprocess.TimeoutExpired:
            row = {"method": method, "rc": "timeout"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\nmethod          image  s/step per stage                                gen img/s  peak GPU MiB")
    for r in rows:
        if r.get("rc") != 0:
            print(f"{r['method']:<15} FAILED: {r.get('error', r.get('rc'))}")
            continue
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["s_per_step"].items())
        print(f"{r['method']:<15} {r['image_size']:>5}  {stages:<46} {r['gen_images_per_s']:>9.2f}  "
              f"{r['peak_gpu_mib'] or 0:>12,.0f}")
    return 0 if all(r.get("rc") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
