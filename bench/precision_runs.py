"""Benchmark: does bf16 autocast, or LoRA, change what a run reaches? One run of the gpt2-scale job
trained three ways and tested the same way.

For one method and seed of `reproduce --preset gpt2-scale` (default A-LoL, seed 0, on tiny-hh):
    bf16   the preset as it is: bf16 autocast, full fine-tuning. The committed reference run is
           copied in first, so `reproduce` reuses it if its provenance is this call's (same
           settings, inputs and code) and retrains it otherwise; the output says which.
    fp32   the same run with --offline.no-bf16.
    lora   bf16 with LoRA adapters of rank --lora-r (alpha --lora-alpha) at the adapters' rate
           --lora-lr (the paper's QLoRA rate, 2e-4), on every linear layer but the output layer.
Every variant starts from the same cached pi_ref, V_ref and advantages, and is tested on the same
prompts under both test views. The bar for keeping bf16: its test total within decoding noise
of fp32's, that is |bf16 - fp32| <= 2 sd, where sd is pi_ref's test total over sampling seeds
(the reference's decoding_noise.json). Writes results/measurements/precision_runs_<folder>.json
with each variant's totals, training seconds, steps and kept step. Run it alone on the machine.

    python bench/precision_runs.py                        # A-LoL seed 0 of the tiny-hh set
    python bench/precision_runs.py --variants fp32 --method nll
"""

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from alol_min.run.config import preset
from alol_min.run.reproduce import run, task_folder

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bf16", "fp32", "lora")


def variant_config(args, variant: str):
    """The preset with this variant's offline options, writing into <out>/<variant>."""
    cfg = preset(args.preset, args.task)
    changes = {
        "bf16": {"bf16": True},
        "fp32": {"bf16": False},
        "lora": {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lr": args.lora_lr},
    }
    cfg.offline = dataclasses.replace(cfg.offline, **changes[variant])
    cfg.methods, cfg.seeds, cfg.decoding_seeds = (args.method,), (args.seed,), 1
    cfg.out_dir = str(Path(args.out) / variant)
    cfg.figures_dir = str(Path(args.out) / variant / "figures")
    cfg.progress = not args.no_progress
    return cfg


def read_run(folder: Path, name: str) -> dict:
    row = {}
    for path in sorted((folder / "runs" / name).glob("test*.json")):
        view = path.stem.removeprefix("test").removeprefix("-") or "main"
        scores = json.loads(path.read_text())
        row[view] = round(scores["total"], 4)
        row.update({k: scores[k] for k in ("steps", "kept_step", "train_seconds") if k in scores})
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="tiny-hh", choices=["tiny-hh", "chitchat"])
    parser.add_argument("--preset", default="gpt2-scale")
    parser.add_argument("--method", default="a_lol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=16.0)
    parser.add_argument("--lora-lr", type=float, default=2e-4)
    parser.add_argument("--reference-dir", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "precision"), help="scratch runs")
    parser.add_argument("--result", default=None, help="the JSON written (default: measurements)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    name = f"{args.method}-s{args.seed}"
    folder = task_folder(variant_config(args, "bf16"))
    reference = Path(args.reference_dir) / folder
    result = {"task": args.task, "preset": args.preset, "folder": folder, "run": name,
              "lora": {"r": args.lora_r, "alpha": args.lora_alpha, "lr": args.lora_lr},
              "variants": {}}  # fmt: skip
    for variant in args.variants:
        cfg = variant_config(args, variant)
        target = Path(cfg.out_dir) / folder / "runs" / name
        if variant == "bf16" and (reference / "runs" / name / "test.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(reference / "runs" / name, target)
        out = run(cfg)
        result["variants"][variant] = read_run(out, name)
        print(variant, result["variants"][variant], flush=True)
    noise = reference / "decoding_noise.json"
    if noise.exists():
        sd = json.loads(noise.read_text())["sd"]
        result["decoding_noise_sd"] = sd
        have = result["variants"]
        if "bf16" in have and "fp32" in have:
            gap = have["bf16"]["main"] - have["fp32"]["main"]
            result["bf16_minus_fp32"] = round(gap, 4)
            result["bf16_within_decoding_noise"] = bool(abs(gap) <= 2 * sd)
        if "bf16" in have and "lora" in have:
            result["lora_minus_full"] = round(have["lora"]["main"] - have["bf16"]["main"], 4)
    path = (
        Path(args.result)
        if args.result
        else ROOT / "results" / "measurements" / (f"precision_runs_{folder}.json")
    )
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
