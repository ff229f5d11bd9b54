"""A trained model through every backend: same top-1 on a held-out folder, float16 vs float32.

    python benchmarks/bench_deploy_agreement.py                          # binarydensenet_tiny, 8 epochs
    python benchmarks/bench_deploy_agreement.py --arch binarydensenet28 --epochs 3 --json out.json
    python benchmarks/bench_deploy_agreement.py --checkpoint runs/NAME/best.pt   # skip training

Trains with `bnn train` on the built-in shapes dataset (10 classes, 32 px) unless a checkpoint is
given, writes its 1,000 validation images to a folder as PNG and JPEG files, then runs
`bnn export` and `bnn pack` (float32 and float16) and classifies every file with the PyTorch
checkpoint, onnxruntime, the packed float32 and the packed float16 model, each opened by
content through ``bnncli.artifacts.open_model`` and fed the same preprocessed arrays.
Reports accuracy per backend, how many images get the same top-1 in PyTorch, onnxruntime and the
packed runtime, the float16-vs-float32 top-1 agreement, and the largest logit differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def write_heldout(folder: Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """The shapes validation split as image files in class folders (every 4th as JPEG)."""
    from bnncli.data.builtin import ShapesDataset

    data = ShapesDataset("shapes", "val")
    files = []
    for i in range(len(data) if limit is None else min(limit, len(data))):
        image, label = data[i]
        cls_dir = folder / data.classes[label]
        cls_dir.mkdir(parents=True, exist_ok=True)
        path = cls_dir / (f"{i:04d}.jpg" if i % 4 == 3 else f"{i:04d}.png")
        image.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
        files.append((path, label))
    return files


def bnn(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "bnncli", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bnn {' '.join(args)} failed:\n{res.stderr}")
    print(res.stdout.strip(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="binarydensenet_tiny")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of training")
    ap.add_argument("--images", type=int, help="use only the first N validation images")
    ap.add_argument("--work", type=Path, help="keep the run, artifacts and images here")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import numpy as np

    from bnncli.artifacts.open import open_model
    from bnncli.deploy.verification import compare
    from bnncli.images.preprocess import preprocess_file

    work = args.work or Path(tempfile.mkdtemp(prefix="bnn-agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint
    if ckpt is None:
        run = work / "run"
        bnn("train", "--arch", args.arch, "--data", "builtin:shapes", "--epochs", str(args.epochs), "--out", str(run))
        ckpt = run / "best.pt"
    bnn("export", str(ckpt), "-o", str(work / "model.onnx"), "--force")
    bnn("pack", str(ckpt), "-o", str(work / "model32.bnn"), "--float-dtype", "float32", "--force")
    bnn("pack", str(ckpt), "-o", str(work / "model16.bnn"), "--float-dtype", "float16", "--force")
    files = write_heldout(work / "heldout", args.images)

    backends = {"pytorch": ckpt, "onnxruntime": work / "model.onnx", "packed_float32": work / "model32.bnn",
                "packed_float16": work / "model16.bnn"}
    predictors = {name: open_model(path) for name, path in backends.items()}
    pp = predictors["pytorch"].preprocessing
    labels = np.array([label for _, label in files])
    logits = {name: [] for name in backends}
    for start in range(0, len(files), 50):
        x = np.stack([preprocess_file(path, pp) for path, _ in files[start:start + 50]])
        for name, predictor in predictors.items():
            logits[name].append(predictor(x))
    logits = {k: np.concatenate(v) for k, v in logits.items()}
    top1 = {k: v.argmax(1) for k, v in logits.items()}
    same = (top1["pytorch"] == top1["onnxruntime"]) & (top1["pytorch"] == top1["packed_float32"])
    result = {
        "checkpoint": str(ckpt),
        "arch": predictors["pytorch"].arch,
        "images": len(files),
        "accuracy": {k: float((v == labels).mean()) for k, v in top1.items()},
        "same_top1_pytorch_onnx_packed": int(same.sum()),
        "float16_vs_float32_top1_agreement": float((top1["packed_float16"] == top1["packed_float32"]).mean()),
        "max_rel_diff_vs_pytorch": {k: compare(logits["pytorch"], v).max_rel_diff
                                    for k, v in logits.items() if k != "pytorch"},
        "sizes": {k: Path(v).stat().st_size for k, v in backends.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
