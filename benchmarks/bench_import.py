"""Every importable Larq Zoo model imported and compared with Keras in PyTorch, onnxruntime and the packed runtime.

    TF_USE_LEGACY_KERAS=1 /work/larqenv/bin/python tests/fixtures/larq/make_fixtures.py --full /work/larq-full
    python benchmarks/bench_import.py --dir /work/larq-full [--json out.json]

The first command (TensorFlow, larq and larq-zoo in their own environment; see
tests/fixtures/larq/make_fixtures.py) builds BinaryDenseNet28, 37, 37Dilated, 45,
BinaryResNetE18, BiRealNet, QuickNetSmall, QuickNet, QuickNetLarge, MeliusNet22, XNORNet and BinaryAlexNet
with larq-zoo, gives them
random weights and BatchNorm statistics, and saves each
as ``<Model>.h5`` (Keras ``save_weights``, the layout of the published files) with an ``.npz`` of
4 inputs at 224 px and Keras' logits. This script then, per model: ``bnn import larq`` (the
architecture read off the file), ``bnn export`` and ``bnn pack`` (float32 and float16, with
``--tolerance 1``: the comparison that matters here is with Keras), and compares each backend's
logits with Keras' (largest difference, relative to the largest logit, top-1 agreement), and
reports the file sizes. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = {  # Larq Zoo class -> bnncli model
    "BinaryDenseNet28": "binarydensenet28",
    "BinaryDenseNet37": "binarydensenet37",
    "BinaryDenseNet37Dilated": "binarydensenet37_dilated",
    "BinaryDenseNet45": "binarydensenet45",
    "BinaryResNetE18": "resnete18",
    "BiRealNet": "birealnet_larq",
    "QuickNetSmall": "quicknet_small",
    "QuickNet": "quicknet",
    "QuickNetLarge": "quicknet_large",
    "MeliusNet22": "meliusnet22",
    "XNORNet": "xnornet",
    "BinaryAlexNet": "binary_alexnet",
}


def bnn(*args) -> None:
    r = subprocess.run([sys.executable, "-m", "bnncli", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bnn {' '.join(map(str, args))} failed:\n{r.stderr}")


def parity(keras: np.ndarray, got: np.ndarray) -> dict:
    from bnncli.deploy.verification import compare

    p = compare(keras, got)
    return {"max_abs_diff": p.max_abs_diff, "max_rel_diff": p.max_rel_diff, "top1": f"{p.top1_agree}/{p.samples}"}


def first_flip(model, packed, x: np.ndarray, inputs_file: Path) -> dict | None:
    """Where PyTorch's and the packed runtime's binarizations first differ from Keras': the binary
    conv, how many signs flip there, and the largest |x| (Keras' value) among them. A difference in
    the logits that starts at a flip of a value within float rounding of 0 is the order of float
    additions, not a different function. None when the file lacks the Keras values."""
    if not inputs_file.is_file():
        return None
    import torch

    from bnncli.nn import BinaryConv2d

    keras = np.load(inputs_file)
    count = len([k for k in keras.files if k.startswith("c")])
    seen: list[np.ndarray] = []
    # The convs that binarize their input (not BinaryAlexNet's first, binary weights on the image).
    hooks = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].numpy().transpose(0, 2, 3, 1)))
             for m in model.modules() if isinstance(m, BinaryConv2d) and m.binary_input]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    values = packed.run(x, intermediates=True)
    nodes = [n for n in packed.graph.nodes if n.op == "BinaryConv"]
    out = {}
    for backend, maps in (("pytorch", seen), ("packed", [values[n.inputs[0]] for n in nodes])):
        out[backend] = "no flip"
        for i in range(min(count, len(maps))):
            ref = keras[f"c{i}"]
            if backend == "packed":
                got = maps[i].transpose(0, 2, 3, 1)  # Model.run returns NCHW values; Keras' are NHWC
                t = packed.graph.param(nodes[i], "in_threshold")
                negate = packed.graph.param(nodes[i], "in_negate")
                if t is None:
                    bits = got >= 0
                else:  # a BatchNorm folded into the binarization: x >= t, or x <= t where negated
                    bits = np.where(negate.astype(bool) if negate is not None else False, got <= t, got >= t)
            else:
                bits = maps[i] >= 0
            flips = bits != (ref >= 0)
            if flips.any():
                out[backend] = (f"binary conv {i} ({keras['names'][i]}): {int(flips.sum())} of {ref.size} signs, "
                                f"|x| <= {float(np.abs(ref[flips]).max()):.2g}")
                break
    return out


def run_model(larq_name: str, arch: str, src: Path, work: Path) -> dict:
    import torch

    from bnncli.artifacts.checkpoint import load_model
    from bnncli.artifacts.onnx_file import ort_session
    from bnncli.runtime import load

    data = np.load(src / f"{larq_name}.npz")
    x = np.ascontiguousarray(data["inputs"].astype(np.float32).transpose(0, 3, 1, 2))
    keras = data["logits"]
    ckpt, onnx, packed, packed16 = (work / f"{arch}{s}" for s in (".pt", ".onnx", ".bnn", ".f16.bnn"))
    t0 = time.perf_counter()
    bnn("import", "larq", src / f"{larq_name}.h5", "-o", ckpt, "--force")
    imported_s = time.perf_counter() - t0
    bnn("export", ckpt, "-o", onnx, "--tolerance", 1, "--force")
    bnn("pack", ckpt, "-o", packed, "--tolerance", 1, "--force")
    bnn("pack", ckpt, "-o", packed16, "--float-dtype", "float16", "--tolerance", 1, "--force")
    model, meta = load_model(ckpt)
    assert meta["arch"] == arch, (meta["arch"], arch)
    with torch.no_grad():
        pytorch = model(torch.from_numpy(x)).numpy()
    packed_model = load(packed, threads=1)
    return {
        "larq_zoo_model": larq_name, "arch": arch, "import_seconds": round(imported_s, 1),
        "first_flip": first_flip(model, load(packed, threads=1, backend="numpy"), x,
                                 src / f"{larq_name}_binary_inputs.npz"),
        "h5_bytes": (src / f"{larq_name}.h5").stat().st_size,
        "pytorch": parity(keras, pytorch),
        "onnxruntime": parity(keras, ort_session(str(onnx)).run(None, {"input": x})[0]),
        "packed_float32": parity(keras, packed_model(x)),
        "packed_float32_numpy": parity(keras, load(packed, threads=1, backend="numpy")(x)),
        "packed_float16": parity(keras, load(packed16, threads=1)(x)),
        "bytes": {"checkpoint": ckpt.stat().st_size, "onnx": onnx.stat().st_size,
                  "packed_float32": packed.stat().st_size, "packed_float16": packed16.stat().st_size},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/work/larq-full"), help="make_fixtures.py --full output")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--available", action="store_true", help="run the models whose files --dir holds, skip the rest")
    args = ap.parse_args()
    args.models = [m for m in args.models if (args.dir / f"{m}.h5").is_file()] if args.available else args.models
    missing = [m for m in args.models if not (args.dir / f"{m}.h5").is_file()]
    if missing:
        raise SystemExit(f"{args.dir} lacks {', '.join(missing)}; make them with the first command in this "
                         f"script's docstring")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = run_model(name, MODELS[name], args.dir, Path(tmp))
            rows.append(row)
            cells = "  ".join(f"{k} {row[k]['max_abs_diff']:.2g} abs {row[k]['max_rel_diff']:.2g} rel, "
                              f"top-1 {row[k]['top1']}"
                              for k in ("pytorch", "onnxruntime", "packed_float32", "packed_float32_numpy",
                                        "packed_float16"))
            print(f"{name:24s} {cells}  packed {row['bytes']['packed_float32']:,} / "
                  f"{row['bytes']['packed_float16']:,} B", flush=True)
            if row["first_flip"]:
                print(f"{'':24s} first sign that differs from Keras: {row['first_flip']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
