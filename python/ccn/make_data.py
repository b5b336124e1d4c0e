"""make-data: a folder of class folders of images -> batches in cuda-convnet2's layout.

    python -m ccn.make_data --src=<train folder> --tgt=<batch folder> [--val-src=<folder>]

--src holds one subfolder of images per class (the sorted folder names are the label
names). Every image is decoded, resized so that its short side is --size (default 256,
cuda-convnet2's) and centre-cropped to --size x --size, then re-encoded as JPEG. The
images are taken in a fixed shuffled order (``ccn.data.images.list_images``) and cut into
training batches 1..T of --batch-size; the validation images (--val-src, or else the last
--val-fraction of the shuffled list) make batches T+1..T+V. In --tgt:

    data_batch_N/data_batch_N.K   pickled dict: 'data' = list of JPEG bytes (sub-batches of
                                  --sub-batch-size), 'labels' = list of [class index]
    data_batch_N/stats.npz        sums of the batch's pixels (for the mean and colour PCA)
    batches.meta                  pickled dict: 'label_names', 'data_mean' (3*size*size
                                  float32, (C, H, W) order, pixel units 0..255), 'num_vis',
                                  'img_size', 'batch_size', 'color_pca_eigvals' (3,) and
                                  'color_pca_eigvecs' (3, 3) (columns; RGB covariance of
                                  the training pixels, pixel units), 'train_batch_range',
                                  'test_batch_range'
    make_data.json                the settings and the image list's digest (for resuming)

The pickles hold data only (dicts, lists, bytes, ints, NumPy arrays) and are read with
``ccn.data.safe_pickle.load``, which runs no code. Work runs in --workers processes, a
bounded number of sub-batches in flight. It is resumable: a batch folder appears (renamed
from data_batch_N.partial) only once it is complete, so a rerun with the same settings
skips the batches already there and redoes only the rest and batches.meta.
"""
import argparse
import collections
import concurrent.futures
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys

import numpy as np

from .data import augment, safe_pickle
from .data.images import list_images

SETTINGS_FILE = "make_data.json"
META_FILE = "batches.meta"


def resize_square(path, size, quality):
    """(JPEG bytes, their decoded uint8 (size, size, 3)) of an image: short side to size, centre crop."""
    from PIL import Image
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image = image.convert("RGB")
        width, height = image.size
        scale = size / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = image.resize(resized, Image.BICUBIC)
        left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
    jpeg = out.getvalue()
    # the statistics are of the stored image as the providers will decode it, not of the
    # pixels before JPEG compression
    with Image.open(io.BytesIO(jpeg)) as stored:
        return jpeg, np.asarray(stored.convert("RGB"), dtype=np.uint8)


def encode_sub_batch(entries, size, quality):
    """JPEG bytes of each (path, label) and the sums the meta needs, for one sub-batch."""
    jpegs = []
    pixel_sum = np.zeros((size, size, 3), np.float64)
    rgb_outer = np.zeros((3, 3), np.float64)
    for path, _ in entries:
        try:
            jpeg, pixels = resize_square(path, size, quality)
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"{path}: cannot decode image ({e})") from None
        jpegs.append(jpeg)
        pixel_sum += pixels
        flat = pixels.reshape(-1, 3).astype(np.float64)
        rgb_outer += flat.T @ flat
    return jpegs, {"pixel_sum": pixel_sum, "rgb_outer": rgb_outer, "count": np.array(len(entries))}


def plan(args):
    """(label names, training entries, validation entries), each entry (path, label)."""
    classes, train = list_images(args.src, "--src")
    if args.val_src:
        val_classes, val = list_images(args.val_src, "--val-src")
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise ValueError(f"--val-src {args.val_src}: classes not in --src: {', '.join(unknown[:5])}")
        index = {name: classes.index(name) for name in val_classes}
        val = [(path, index[val_classes[label]]) for path, label in val]
    else:
        if not 0 <= args.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        held = int(round(args.val_fraction * len(train)))
        if args.val_fraction > 0:
            held = max(1, held)
        train, val = train[:len(train) - held], train[len(train) - held:]
    if not train:
        raise ValueError(f"--src {args.src}: no training images left after holding out the validation set")
    return classes, train, val


def batches_of(entries, first_number, batch_size):
    return {first_number + i: entries[start:start + batch_size]
            for i, start in enumerate(range(0, len(entries), batch_size))}


def check_settings(args, classes, train, val):
    """Writes make_data.json, or checks that an existing one matches (a resumed run)."""
    roots = (args.src, args.val_src or args.src)
    listing = [[os.path.relpath(path, root), label] for root, entries in zip(roots, (train, val))
               for path, label in entries]
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    settings = {"size": args.size, "batch_size": args.batch_size, "sub_batch_size": args.sub_batch_size,
                "quality": args.quality, "classes": classes, "num_train": len(train), "num_val": len(val),
                "images": digest}
    path = os.path.join(args.tgt, SETTINGS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except ValueError:
                old = None
        if old != settings:
            changed = sorted(k for k in settings if not old or old.get(k) != settings[k])
            raise ValueError(f"--tgt {args.tgt} holds batches made with other settings or images "
                             f"({', '.join(changed)} differ); use an empty --tgt")
        return
    with open(path + ".tmp", "w") as f:
        json.dump(settings, f, indent=1)
    os.replace(path + ".tmp", path)


def write_batch(args, number, sub_batches):
    """Writes one batch folder from its [(entries, jpegs, stats)] sub-batches, atomically."""
    final = os.path.join(args.tgt, f"data_batch_{number}")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    totals = {}
    for k, (entries, jpegs, stats) in enumerate(sub_batches):
        safe_pickle.dump({"data": jpegs, "labels": [[label] for _, label in entries]},
                         os.path.join(partial, f"data_batch_{number}.{k}"))
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + value
    np.savez(os.path.join(partial, "stats.npz"), **totals)
    os.rename(partial, final)


def write_meta(args, classes, train_numbers, val_numbers):
    totals = {}
    for number in train_numbers:
        with np.load(os.path.join(args.tgt, f"data_batch_{number}", "stats.npz"), allow_pickle=False) as stats:
            for key in stats.files:
                totals[key] = totals.get(key, 0) + stats[key]
    count = int(totals["count"])
    mean = (totals["pixel_sum"] / count).transpose(2, 0, 1).reshape(-1).astype(np.float32)
    rgb_sum = totals["pixel_sum"].reshape(-1, 3).sum(axis=0)
    eigvals, eigvecs = augment.color_pca(rgb_sum, totals["rgb_outer"], count * args.size * args.size)
    safe_pickle.dump({"label_names": classes, "data_mean": mean, "num_vis": 3 * args.size * args.size,
                      "img_size": args.size, "batch_size": args.batch_size,
                      "color_pca_eigvals": eigvals.astype(np.float32), "color_pca_eigvecs": eigvecs.astype(np.float32),
                      "train_batch_range": list(train_numbers), "test_batch_range": list(val_numbers)},
                     os.path.join(args.tgt, META_FILE))


def make_data(args, after_batch=None):
    """Writes (or completes) the batches in args.tgt; after_batch(number) runs after each write."""
    from tqdm import tqdm
    classes, train, val = plan(args)
    os.makedirs(args.tgt, exist_ok=True)
    check_settings(args, classes, train, val)
    batches = batches_of(train, 1, args.batch_size)
    train_numbers = list(batches)
    val_batches = batches_of(val, len(train_numbers) + 1, args.batch_size)
    batches.update(val_batches)
    todo = [n for n in batches if not os.path.isdir(os.path.join(args.tgt, f"data_batch_{n}"))]
    done_images = sum(len(batches[n]) for n in batches if n not in todo)
    if done_images:
        print(f"make_data: {len(batches) - len(todo)} of {len(batches)} batches already in {args.tgt}; resuming")
    jobs = [(n, k, batches[n][s:s + args.sub_batch_size])
            for n in todo for k, s in enumerate(range(0, len(batches[n]), args.sub_batch_size))]
    workers = args.workers or os.cpu_count() or 1
    context = multiprocessing.get_context("forkserver")
    pending = collections.defaultdict(dict)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool, \
            tqdm(total=len(train) + len(val), initial=done_images, unit="img", desc="make_data") as bar:
        in_flight = collections.deque()
        queue = iter(jobs)
        while True:
            while len(in_flight) < 2 * workers:  # a bounded number of sub-batches in memory
                job = next(queue, None)
                if job is None:
                    break
                in_flight.append((job, pool.submit(encode_sub_batch, job[2], args.size, args.quality)))
            if not in_flight:
                break
            (number, k, entries), future = in_flight.popleft()
            jpegs, stats = future.result()
            pending[number][k] = (entries, jpegs, stats)
            bar.update(len(entries))
            if sum(len(e) for e, _, _ in pending[number].values()) == len(batches[number]):
                subs = pending.pop(number)
                write_batch(args, number, [subs[i] for i in sorted(subs)])
                if after_batch is not None:
                    after_batch(number)
    write_meta(args, classes, train_numbers, list(val_batches))
    print(f"make_data: {len(train_numbers)} training batches (1-{len(train_numbers)}) and {len(val_batches)} "
          f"validation batches of {args.batch_size} images, {args.size}x{args.size}, in {args.tgt}")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m ccn.make_data", description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="folder of class folders of training images")
    p.add_argument("--tgt", required=True, help="folder for the batches (created; a partial one is completed)")
    p.add_argument("--val-src", help="folder of class folders of validation images")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="without --val-src, hold out this fraction of --src for validation (default 0.1)")
    p.add_argument("--size", type=int, default=256, help="side of the stored square images (default 256)")
    p.add_argument("--batch-size", type=int, default=3072, help="images per batch (default 3072)")
    p.add_argument("--sub-batch-size", type=int, default=1024, help="images per batch file (default 1024)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images (default 90)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    return p


def main(argv=None, after_batch=None):
    args = build_parser().parse_args(argv)
    try:
        for name in ("size", "batch_size", "sub_batch_size", "quality"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive int")
        if args.workers < 0:
            raise ValueError("--workers must be >= 0")
        make_data(args, after_batch)
        return 0
    except (ValueError, OSError) as e:  # MissingDataError and CorruptDataError among them
        print(f"make_data: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("make_data: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
