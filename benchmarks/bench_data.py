#!/usr/bin/env python3
"""Images/s of the ImageNet training pipeline, ours against torchvision, in the same run.

    python benchmarks/bench_data.py [--images=512] [--workers=0,1,2] [--epochs=3]

A synthetic ImageNet-like tree (smooth random 500x375 JPEGs in 8 class folders) goes
through ``python -m ccn.make_data`` (256x256 JPEG batches). Then, for each worker count W:

  ours   the ``image`` provider on those batches, training mode: random 224x224 crop,
         flip, mean image subtracted, PCA colour noise (0.1), written as the float32
         (rows, numCases) batch, decoded in W worker processes;
  torch  torchvision ImageFolder on the same 256x256 JPEG files + DataLoader with W
         workers, batch 128: RandomCrop(224), RandomHorizontalFlip, PILToTensor, float,
         mean subtracted, the same PCA noise, collated to (numCases, 3, 224, 224) float32.

Each is timed over --epochs epochs after one untimed warm-up epoch. Reported: images/s
(wall clock), images/s per worker process, images per CPU-second (user + system time of
the parent and every worker, from /proc: the per-core rate, which holds on a busy machine
where wall-clock rates do not), and the cores a pipeline needs to feed AlexNet at 10,000
images/s (the GPU training goal) = 10,000 / images per CPU-second. torch's side is skipped, with a line saying so, when torch or torchvision
is not installed.
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL = 10000  # images/s AlexNet trains at on the GPU target


def write_tree(root, n, classes=8, seed=0):
    """n smooth random JPEGs (500x375, quality 90: about ImageNet's size and entropy)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for k in range(n):
        folder = os.path.join(root, f"class{k % classes}")
        os.makedirs(folder, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(coarse, np.float32) + rng.normal(0, 12, (375, 500, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{k}.jpg"), quality=90)


def extract_files(batches, root):
    """The make_data batches' JPEGs as class-folder files, for torchvision's ImageFolder."""
    from ccn.data import safe_pickle
    meta = safe_pickle.load(os.path.join(batches, "batches.meta"))
    count = 0
    for number in meta["train_batch_range"]:
        folder = os.path.join(batches, f"data_batch_{number}")
        for part in sorted(os.listdir(folder)):
            if not part.startswith("data_batch_"):
                continue
            batch = safe_pickle.load(os.path.join(folder, part))
            for jpeg, (label,) in zip(batch["data"], batch["labels"]):
                os.makedirs(os.path.join(root, f"class{label}"), exist_ok=True)
                with open(os.path.join(root, f"class{label}", f"{count}.jpg"), "wb") as f:
                    f.write(jpeg)
                count += 1
    return meta, count


def descendants(pid):
    """Process ids under pid (workers, a forkserver and its children), from /proc."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child] + descendants(child)
    return found


def cpu_seconds():
    """CPU time (user + system) of this process and every process under it so far."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


class Clock:
    """Wall time and CPU time (all processes of the pipeline) of a timed stretch."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def time_ours(batches, workers, epochs):
    from ccn.data import get_provider
    with get_provider("image", batches, None, inner_size=224, color_noise=0.1, decode_workers=workers) as p:
        per_epoch = len(p.batch_range)
        for _ in range(per_epoch):  # warm-up epoch: workers started, files in the page cache
            p.get_next_batch()
        images = 0
        with Clock() as clock:
            for _ in range(epochs * per_epoch):
                images += p.get_next_batch()[2][0].shape[1]
        return images, clock


def time_torch(files, meta, workers, epochs):
    import torch
    from torchvision import datasets, transforms
    mean = torch.tensor(meta["data_mean"].reshape(3, 256, 256).mean(axis=(1, 2)), dtype=torch.float32)[:, None, None]
    eigvals = torch.tensor(meta["color_pca_eigvals"], dtype=torch.float32)
    eigvecs = torch.tensor(meta["color_pca_eigvecs"], dtype=torch.float32)

    def pca_noise(image):
        alpha = torch.randn(3) * 0.1
        return image + (eigvecs @ (alpha * eigvals) / 255.0)[:, None, None]

    transform = transforms.Compose([transforms.RandomCrop(224), transforms.RandomHorizontalFlip(),
                                    transforms.PILToTensor(), transforms.Lambda(lambda t: t.float() - mean),
                                    transforms.Lambda(pca_noise)])
    parallel = dict(num_workers=workers, persistent_workers=True, prefetch_factor=2) if workers else {}
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(files, transform), batch_size=128, shuffle=True,
                                         **parallel)
    for _ in loader:  # warm-up epoch
        pass
    images = 0
    with Clock() as clock:
        for _ in range(epochs):
            for data, _ in loader:
                images += len(data)
    return images, clock


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="images in the synthetic tree (default 512)")
    parser.add_argument("--workers", default="0,1,2",
                        help="worker counts to time; 0: decode in the loading process itself (default 0,1,2)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (default 3)")
    args = parser.parse_args()
    from ccn import make_data
    try:
        import torch
        import torchvision
        torch_version = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
        torch.set_num_threads(1)
    except ImportError as e:
        torch_version = None
        print(f"torch side skipped: {e} (pip install torch torchvision to compare)")
    from PIL import __version__ as pillow_version
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"Pillow {pillow_version}" + (f", {torch_version}" if torch_version else ""))
    work = tempfile.mkdtemp(prefix="bench_data-")
    try:
        write_tree(os.path.join(work, "src"), args.images)
        batches = os.path.join(work, "batches")
        start = time.perf_counter()
        code = make_data.main([f"--src={work}/src", f"--tgt={batches}", "--batch-size=256", "--sub-batch-size=128",
                               "--val-fraction=0.05"])
        assert code == 0
        print(f"make_data: {args.images / (time.perf_counter() - start):.0f} images/s with {os.cpu_count()} workers")
        meta, count = extract_files(batches, os.path.join(work, "files"))
        print(f"{count} training images, 256x256 JPEG -> 224x224 crops; {args.epochs} timed epochs each")
        print(f"{'pipeline':<8} {'workers':>7} {'img/s':>8} {'img/s/worker':>13} {'img/CPU-s':>10} "
              f"{'cores for 10k img/s':>20}")
        for workers in (int(w) for w in args.workers.split(",")):
            sides = [("ours", lambda: time_ours(batches, workers, args.epochs))]
            if torch_version:
                sides.append(("torch", lambda: time_torch(os.path.join(work, "files"), meta, workers, args.epochs)))
            for name, measure in sides:
                images, clock = measure()
                rate, per_cpu = images / clock.wall, images / clock.cpu
                print(f"{name:<8} {workers:>7} {rate:>8.0f} {rate / max(workers, 1):>13.0f} {per_cpu:>10.0f} "
                      f"{GOAL / per_cpu:>20.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
