"""The GPU check of issue 13, in one run: training speed, memory, end to end, DDP, mixed precision.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine (well under 8 minutes); ``--smoke`` runs every
part at tiny sizes on the CPU in seconds, GPU-only parts marked skipped. Each part runs in its
own subprocess with its own time limit, so one failure, hang or CUDA error loses only that part;
the parts run in order of importance and are skipped, marked so, once ``--budget`` is spent.
Results go to ``OUT/gpu_check.json`` (rewritten after every part) and ``OUT/<part>.json``:

- ``environment``: torch, CUDA, the GPU;
- ``throughput_<arch>_<eager|compiled>``: training images/s of binarydensenet28 and resnete18
  (batch 256, 224 px, bf16 autocast, channels_last, Adam, latent clamp) beside the same network
  with float convs in the same process (``ratio_to_float``, the issue's figure), peak memory;
- ``train_jpeg_<loader>``: ``bnn train --loader pil|torchvision|device`` end to end on a generated
  folder of ImageNet-sized JPEGs (binarydensenet28, bf16, channels_last), per-epoch images/s from
  its metrics.jsonl; ``pil``: Pillow in the workers, ``torchvision``: libjpeg-turbo and uint8
  tensors in the workers, ``device``: the workers read bytes and the GPU decodes (nvJPEG), crops,
  flips and normalises. ``gpu_check.json``'s ``train_jpeg_images_per_s`` gathers the last epoch of each;
- ``amp_bf16`` / ``amp_fp16``: short ``bnn train`` runs; their losses and whether they fall;
- ``torchrun``: ``torchrun --nproc_per_node 1 -m bnncli train`` and an NCCL probe (a process
  group, an all-reduce and DDP steps; ``bnn train`` with one process joins no process group).

    bash benchmarks/gpu_check.sh                      # on the GPU machine; OUT=... to choose the folder
    python benchmarks/gpu_check.py --smoke --out /tmp/gc   # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GPU_ARCHS = ("binarydensenet28", "resnete18")
SMOKE_ARCHS = {"binarydensenet28": "binarydensenet_tiny", "resnete18": "resnete_tiny"}
LOADERS = ("pil", "torchvision", "device")  # bnn train --loader

# part -> (time limit in seconds on a GPU, in smoke mode), in the order they run
PARTS: dict[str, tuple[int, int]] = {
    "environment": (60, 30),
    "throughput_binarydensenet28_eager": (90, 40),
    "train_jpeg_pil": (120, 60),  # also generates the JPEG folder
    "train_jpeg_torchvision": (75, 60),
    "train_jpeg_device": (75, 60),
    "throughput_binarydensenet28_compiled": (180, 10),  # two compilations of the whole training step
    "amp_bf16": (60, 60),
    "amp_fp16": (60, 60),
    "torchrun": (90, 60),
    "throughput_resnete18_eager": (60, 40),
    "throughput_resnete18_compiled": (150, 10),
}


def smoke_settings(smoke: bool) -> dict[str, Any]:
    """Sizes of the measured runs: the issue's on a GPU, tiny in smoke mode."""
    if smoke:
        return {"batch_size": 8, "image_size": 32, "steps": 2, "warmup": 1, "repeats": 1, "jpegs": 48,
                "jpeg_size": (64, 48), "classes": 4, "train_arch": "binarydensenet_tiny", "epochs": 1,
                "amp_epochs": 2, "amp_batch": 16, "train_image_size": 32}
    return {"batch_size": 256, "image_size": 224, "steps": 15, "warmup": 5, "repeats": 3, "jpegs": 8192,
            "jpeg_size": (500, 375), "classes": 16, "train_arch": "binarydensenet28", "epochs": 2,
            "amp_epochs": 3, "amp_batch": 256, "train_image_size": 224}


# ---- the driver ------------------------------------------------------------------------------------------------


def run_parts(out: Path, smoke: bool, budget: float, only: list[str] | None) -> dict[str, Any]:
    """Every part in its own subprocess, in order; the summary rewritten after each."""
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"smoke": smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget,
                               "parts": {}}
    t_start = time.monotonic()
    for part, (gpu_limit, smoke_limit) in PARTS.items():
        if only and part not in only:
            continue
        limit = smoke_limit if smoke else gpu_limit
        left = budget - (time.monotonic() - t_start)
        if left < min(limit, 20):
            summary["parts"][part] = {"status": "skipped", "reason": f"out of time budget ({left:.0f} s left)"}
            _write(out / "gpu_check.json", summary)
            continue
        reason = skipped_up_front(part, smoke)
        summary["parts"][part] = ({"status": "skipped", "reason": reason} if reason
                                  else run_part(part, out, smoke, min(limit, left)))
        _write(out / "gpu_check.json", summary)
    summary["train_jpeg_images_per_s"] = {
        loader: summary["parts"].get(f"train_jpeg_{loader}", {}).get("images_per_s_last_epoch") for loader in LOADERS}
    summary["seconds"] = round(time.monotonic() - t_start, 1)
    _write(out / "gpu_check.json", summary)
    return summary


def skipped_up_front(part: str, smoke: bool) -> str | None:
    """Why a part does not run in smoke mode (the parts decide for themselves on a real machine)."""
    if smoke and part.endswith("_compiled"):
        return "smoke mode: torch.compile takes minutes on a CPU (the GPU run measures it)"
    return None


def run_part(part: str, out: Path, smoke: bool, limit: float) -> dict[str, Any]:
    """One part as ``python gpu_check.py --part PART``; its JSON (possibly partial) with a status."""
    result_file = out / f"{part}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--out", str(out)] + (
        ["--smoke"] if smoke else [])
    t0 = time.monotonic()
    status, note = "ok", None
    with open(out / f"{part}.log", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=_env(), cwd=ROOT)
            if proc.returncode != 0:
                status, note = "error", f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            status, note = "timeout", f"killed after its limit of {limit:.0f} s"
    result = _read(result_file)
    if result.get("status") == "skipped":
        status = "skipped"
    elif result.get("status") == "error" and status == "ok":
        status = "error"
    result.update(status=status, seconds=round(time.monotonic() - t0, 1), limit_s=round(limit))
    if note:
        result["note"] = note
    if status in ("error", "timeout"):
        result["log_tail"] = _tail(out / f"{part}.log")
    return result


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _write(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# ---- the parts (each in its own process) -----------------------------------------------------------------------


class Part:
    """What a part writes: ``OUT/<part>.json``, rewritten whenever it learns something."""

    def __init__(self, name: str, out: Path, smoke: bool) -> None:
        self.name, self.out, self.smoke = name, out, smoke
        self.gpu = not smoke and _cuda_available()  # smoke parts that only run bnn train never import torch
        self.s = smoke_settings(smoke)
        self.result: dict[str, Any] = {"part": name, "device": "cuda" if self.gpu else "cpu"}

    @property
    def device(self):
        import torch

        return torch.device("cuda" if self.gpu else "cpu")

    def save(self, **fields: Any) -> None:
        self.result.update(fields)
        _write(self.out / f"{self.name}.json", self.result)

    def skip(self, reason: str) -> None:
        self.save(status="skipped", reason=reason)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def part_environment(p: Part) -> None:
    import torch
    import torchvision

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "torchvision": torchvision.__version__, "cpu_count": os.cpu_count(),
                            "cuda_available": torch.cuda.is_available(), "smoke": p.smoke}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=props.total_memory / 2**30,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
                    bf16_supported=torch.cuda.is_bf16_supported())
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    p.save(**info)


def part_throughput(p: Part, arch: str, compiled: bool) -> None:
    """Float-conv twin, then the BNN, in this process; results saved after each."""
    import argparse as ap

    import bench_train
    import torch

    from bnncli.models import create_model

    if not p.smoke and not p.gpu:
        return p.skip("no CUDA GPU")
    s = p.s
    arch_run = SMOKE_ARCHS[arch] if p.smoke else arch
    args = ap.Namespace(batch_size=s["batch_size"], image_size=s["image_size"], channels_last=p.gpu,
                        amp="bf16" if p.gpu else "none", steps=s["steps"], warmup=s["warmup"], repeats=s["repeats"])
    if p.gpu:
        torch.backends.cudnn.benchmark = True
    p.save(arch=arch_run, compiled=compiled, batch_size=args.batch_size, image_size=args.image_size,
           amp=args.amp, channels_last=args.channels_last, steps=args.steps, repeats=args.repeats, variants={})
    for kind in ("float convs", "binary"):
        torch.manual_seed(0)
        model = create_model(arch_run, num_classes=1000, thumbnail=args.image_size < 50)
        if kind == "float convs":
            model = bench_train.float_twin(model)
        t0 = time.perf_counter()
        step = bench_train.prepare(model, args, p.device, compiled)
        for _ in range(args.warmup):
            step()
        bench_train.sync(p.device)
        warm_s = time.perf_counter() - t0
        if p.gpu:
            torch.cuda.reset_peak_memory_stats(p.device)
        rounds = [bench_train.timed(step, args.steps, p.device) for _ in range(args.repeats)]
        median = sorted(rounds)[len(rounds) // 2]
        r = {"images_per_s": args.batch_size / median, "step_ms": 1000 * median,
             "rounds_ms": [round(1000 * t, 2) for t in rounds], "warmup_s": round(warm_s, 1)}
        if p.gpu:
            r["peak_memory_gib"] = torch.cuda.max_memory_allocated(p.device) / 2**30
        p.result["variants"][kind] = r
        p.save()
        del model, step
        if p.gpu:
            torch.cuda.empty_cache()
    v = p.result["variants"]
    p.save(ratio_to_float=v["binary"]["images_per_s"] / v["float convs"]["images_per_s"])


def jpeg_folder(p: Part) -> Path:
    """``OUT/jpegs/train/<class>/*.jpg`` (made once, in parallel; reused by later parts)."""
    root = p.out / "jpegs" / "train"
    s = p.s
    per_class = s["jpegs"] // s["classes"]
    done = root.parent / ".complete"
    if done.exists():
        return root.parent
    shutil.rmtree(root, ignore_errors=True)
    jobs = [(root / f"c{c:02d}", per_class, *s["jpeg_size"], c) for c in range(s["classes"])]
    if p.smoke:
        for job in jobs:
            _make_class(job)
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
            pool.map(_make_class, jobs)
    done.write_text("")
    return root.parent


def _make_class(job: tuple[Path, int, int, int, int]) -> None:
    import bench_decode

    folder, count, width, height, seed = job
    bench_decode.make_folder(folder, count, width, height, quality=90, seed=seed)


def bnn_train(p: Part, run: Path, extra: list[str], launcher: list[str] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """``bnn train ... --json`` in a subprocess; its summary and metrics.jsonl."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = (launcher or [sys.executable, "-m"]) + ["bnncli", "train", "--out", str(run), "--json",
                                                   "--device", "cuda" if p.gpu else "cpu", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=timeout)
    out: dict[str, Any] = {"command": " ".join(cmd), "returncode": proc.returncode,
                           "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-3000:]
        return out
    metrics = run / "metrics.jsonl"
    out["epochs"] = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    return out


def part_train_jpeg(p: Part, loader: str) -> None:
    """``bnn train --loader LOADER`` on the JPEG folder; the last epoch's images/s is the figure."""
    s = p.s
    t0 = time.perf_counter()
    data = jpeg_folder(p)
    p.save(loader=loader, jpegs=s["jpegs"], jpeg_size=s["jpeg_size"], folder_s=round(time.perf_counter() - t0, 1))
    extra = ["--arch", s["train_arch"], "--data", str(data), "--epochs", str(s["epochs"]),
             "--batch-size", str(s["batch_size"]), "--image-size", str(s["train_image_size"]),
             "--preset", "imagenet", "--loader", loader]
    if p.gpu:
        extra += ["--amp", "bf16", "--channels-last"]
    r = bnn_train(p, p.out / "runs" / f"jpeg_{loader}", extra)
    epochs = r.get("epochs", [])
    summary = {"images_per_s_by_epoch": [e["images_per_s"] for e in epochs],
               "seconds_by_epoch": [e["seconds"] for e in epochs], "skipped": sum(e["skipped"] for e in epochs)}
    if epochs:
        summary["images_per_s_last_epoch"] = epochs[-1]["images_per_s"]
    config = _read(p.out / "runs" / f"jpeg_{loader}" / "config.json").get("config", {})
    p.save(**r, **summary, workers=config.get("workers"), status="ok" if r["returncode"] == 0 and epochs else "error",
           note="epoch 1 includes worker start-up and cuDNN autotuning; the last epoch is the figure. workers: "
                "None is bnn train's default, min(8, CPUs)")


def part_amp(p: Part, amp: str) -> None:
    s = p.s
    data = "builtin:shapes" if not p.smoke else str(jpeg_folder(p))
    extra = ["--arch", "binarydensenet_tiny", "--data", data, "--epochs", str(s["amp_epochs"]), "--amp", amp,
             "--batch-size", str(s["amp_batch"])]
    if p.smoke:
        extra += ["--image-size", "32"]
    r = bnn_train(p, p.out / "runs" / f"amp_{amp}", extra)
    losses = [e["train_loss"] for e in r.get("epochs", [])]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    p.save(**r, amp=amp, train_losses=losses, finite=finite,
           loss_falls=finite and len(losses) > 1 and losses[-1] < losses[0],
           status="ok" if r["returncode"] == 0 and losses else "error")


def part_torchrun(p: Part) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m"]
    data = "builtin:shapes" if not p.smoke else str(jpeg_folder(p))
    extra = ["--arch", "binarydensenet_tiny", "--data", data, "--epochs", "1", "--batch-size",
             "16" if p.smoke else "64"]
    if p.smoke:
        extra += ["--image-size", "32"]
    r = bnn_train(p, p.out / "runs" / "torchrun", extra, launcher=torchrun)
    p.save(bnn_train=r, note="with one process bnn train joins no process group (WORLD_SIZE=1): "
                             "the NCCL probe below is what exercises NCCL")
    if not p.gpu:
        p.save(nccl_probe={"status": "skipped", "reason": "no CUDA GPU: NCCL needs one"},
               status="ok" if r["returncode"] == 0 else "error")
        return
    probe = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                            str(Path(__file__).resolve()), "--nccl-probe", "--out", str(p.out)],
                           capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    result = _read(p.out / "nccl_probe.json")
    result.update(returncode=probe.returncode)
    if probe.returncode != 0:
        result["stderr_tail"] = probe.stderr[-3000:]
    p.save(nccl_probe=result, status="ok" if r["returncode"] == 0 and probe.returncode == 0 else "error")


def nccl_probe(out: Path) -> None:
    """Under torchrun: an NCCL process group, an all-reduce, and DDP steps of a binary model."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from bnncli.models import create_model
    from bnncli.nn import LatentWeightClamp

    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    t = torch.ones(4, device=device) * (rank + 1)
    dist.all_reduce(t)
    model = create_model("binarydensenet_tiny", num_classes=10, thumbnail=True).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device])
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    clamp = LatentWeightClamp(model)
    losses = []
    x, y = torch.randn(64, 3, 32, 32, device=device), torch.randint(0, 10, (64,), device=device)
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp()
        losses.append(loss.item())
    if rank == 0:
        _write(out / "nccl_probe.json", {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                                         "all_reduce": t.tolist(), "ddp_losses": [round(v, 4) for v in losses],
                                         "loss_falls": losses[-1] < losses[0]})
    dist.destroy_process_group()


def run_one(part: str, out: Path, smoke: bool) -> None:
    p = Part(part, out, smoke)
    p.save(status="running")
    try:
        if part == "environment":
            part_environment(p)
        elif part.startswith("throughput_"):
            _, arch, mode = part.split("_")
            part_throughput(p, arch, mode == "compiled")
        elif part.startswith("train_jpeg_"):
            part_train_jpeg(p, part[len("train_jpeg_"):])
        elif part.startswith("amp_"):
            part_amp(p, part.split("_")[1])
        elif part == "torchrun":
            part_torchrun(p)
        else:
            raise ValueError(f"unknown part {part!r}")
        if p.result.get("status") == "running":
            p.save(status="ok")
    except Exception as e:  # recorded, and the driver goes on with the next part
        p.save(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
        raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds; GPU-only parts skipped")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all parts (default 400; smoke 300)")
    ap.add_argument("--only", default=None, help="comma-separated parts to run")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nccl-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nccl_probe:
        return nccl_probe(args.out)
    if args.part:
        try:
            run_one(args.part, args.out, args.smoke)
        except Exception:
            sys.exit(1)
        return
    only = [s for s in args.only.split(",") if s] if args.only else None
    unknown = sorted(set(only or ()) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    budget = args.budget or (300.0 if args.smoke else 400.0)
    summary = run_parts(args.out, args.smoke, budget, only)
    for part, r in summary["parts"].items():
        figure = r.get("ratio_to_float", r.get("images_per_s_last_epoch", r.get("loss_falls", "")))
        if isinstance(figure, float):
            figure = f"{figure:.3f}"
        print(f"{part:<40}{r['status']:<9}{r.get('seconds', 0):>7.1f} s  {figure}")
    print(f"results: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
