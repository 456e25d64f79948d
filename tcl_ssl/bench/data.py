"""Data loading throughput: how fast uint8 training batches reach the training loop from an image
folder, per source (``tcl-ssl bench data``).

The same ``N`` images of one folder (``root/<class>/<image>``; the first images of each class in
turn, so the classes are evenly represented) are served as uint8 ``(B, C, S, S)`` batches with
int64 labels, shuffled, whole batches only, by:

- ``memory``: ``source="memory"``: every file decoded once by
  :func:`~tcl_ssl.data.sources.decode_images` (the preparation, timed; writing and reading back
  a tensor cache like the one ``load_dataset`` keeps are timed too), then :func:`batch_loader` over the
  in-memory :class:`Split` (one gather per batch, no worker processes);
- ``stream``: ``source="stream"``: :func:`batch_loader` over a :class:`FileSplit` of the same
  files, whose ``workers`` DataLoader processes read and decode every file every epoch;
- ``litdata``: Lightning's litdata: ``litdata.optimize`` writes the files' original bytes into
  chunks (what litdata's docs recommend for images: compressed bytes, ``Image(path=...)`` keeps
  existing JPEGs as they are, not raw pixels); ``StreamingDataset`` + ``StreamingDataLoader``
  with the same workers and batch size read them, and the workers decode each batch with our
  decode (:func:`~tcl_ssl.data.decode.decode_bytes`, as ``decode_file``);
- ``litdata-canvas``: the same, the chunks holding the decoded uint8 canvas (decoded once, as
  ``memory``), so that the workers only copy bytes.

Both litdata rows shuffle every chunk fully and deserialise item by item (``--litdata-defaults``:
litdata's default 256-item shuffle blocks and decode windows, which keep a class-sorted listing's
batches to one or two classes and, for tensor items, re-decode a window per item read).
``optimize`` forks its workers (its default is spawn), as our DataLoader workers start.

Throughput is images per second reaching the loop, over ``epochs`` epochs after a warm-up batch
(which starts the workers), epoch 1 and the later epochs also apart (litdata may cache in its
first epoch). Preparation is the one-time work before the first batch (decode, or optimize);
disk is what the source reads: the image files, the tensor cache, the chunks. Peak RSS is the
main process's high-water mark during the row (reset before each row where Linux allows it;
worker processes not included). ``x memory`` is the row's throughput over the in-memory row's.
Each row also counts the distinct labels per batch (a shuffle that mixes the classes gives
nearly ``min(classes, batch)``; a shuffle within blocks of a class-sorted listing gives ~1)
and checks, on a few images, that its pixels equal :func:`~tcl_ssl.data.sources.decode_file`'s.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tcl_ssl.data.decode import decode_bytes
from tcl_ssl.data.loaders import EpochRandomSampler, batch_loader
from tcl_ssl.data.sources import Split, decode_file, decode_images, list_image_folder
from tcl_ssl.data.streaming import FileSplit, usable_cpus
from tcl_ssl.process_memory import peak_rss, reset_peak_rss

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "DEFAULT_DATASET", "select_images", "run", "format_table", "main"]

DEFAULT_DATASET = "/work/shared/datasets/cifar10-jpeg/train"
SOURCES = ("memory", "stream", "litdata", "litdata-canvas")
LABELS = {
    "memory": "memory: decoded once, in-memory Split",
    "stream": "stream: FileSplit, workers decode every epoch",
    "litdata": "litdata: chunks of the JPEG bytes, workers decode",
    "litdata-canvas": "litdata: chunks of the decoded uint8 canvas",
}
#: images per source whose pixels are compared with ``decode_file``'s
CHECKED_IMAGES = 16
#: litdata's chunk size for images in its docs' examples
CHUNK_BYTES = "64MB"


# ----------------------------------------------------------------------------------------------
# the images


def select_images(root: str | Path, num_images: int) -> tuple[list[Path], list[int], list[str]]:
    """The first ``num_images`` images of the folder ``root/<class>/<image>`` taken from each class
    in turn (the first image of every class, then the second, ...), in the folder's listing order
    (by class, then name). Returns ``(files, labels, classes)``."""
    files, labels, classes = list_image_folder(Path(root))
    if num_images > len(files):
        raise ValueError(f"num_images is {num_images}, but {str(root)!r} has only {len(files)} images")
    by_class: list[list[int]] = [[] for _ in classes]
    for i, label in enumerate(labels):
        by_class[label].append(i)
    chosen: list[int] = []
    for rank in range(max(len(members) for members in by_class)):
        chosen += [members[rank] for members in by_class if rank < len(members)]
        if len(chosen) >= num_images:
            break
    chosen = sorted(chosen[:num_images])
    return [files[i] for i in chosen], [labels[i] for i in chosen], classes


def _decode_encoded(data: bytes | Tensor, size: int, channels: int) -> Tensor:
    """:func:`~tcl_ssl.data.sources.decode_file` on a file's bytes instead of its path."""
    return decode_bytes(data.numpy().tobytes() if isinstance(data, Tensor) else data, size, channels)


# ----------------------------------------------------------------------------------------------
# measuring


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _timed_epochs(
    loader: Iterable, epochs: int, channels: int, size: int, set_epoch: Callable[[int], None] | None = None
) -> dict:
    """Iterate ``loader`` for ``epochs`` epochs; the first batch (a warm-up: it starts the workers)
    is not counted. Returns per-epoch ``counts`` (images), ``seconds`` and ``batches``, and the mean
    number of distinct labels per batch."""
    counts, seconds, batches, label_batches = [], [], [], []
    warmup = 0
    for epoch in range(epochs):
        if set_epoch is not None:
            set_epoch(epoch)
        count = done = 0
        start = time.perf_counter()
        for i, (images, labels) in enumerate(loader):
            label_batches.append(labels)
            if epoch == 0 and i == 0:
                if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (channels, size, size):
                    raise RuntimeError(
                        f"expected uint8 (B, {channels}, {size}, {size}) batches, got "
                        f"{images.dtype} {tuple(images.shape)}"
                    )
                warmup = images.shape[0]
                start = time.perf_counter()
                continue
            count += images.shape[0]
            done += 1
        seconds.append(time.perf_counter() - start)
        counts.append(count)
        batches.append(done)
    if sum(counts) == 0:
        raise ValueError("no batch after the warm-up batch: give more images or epochs, or a smaller batch size")
    return {
        "counts": counts,
        "seconds": seconds,
        "batches": batches,
        "images_per_epoch": counts[0] + warmup,
        "labels_per_batch": sum(int(torch.unique(y).numel()) for y in label_batches) / len(label_batches),
    }


def _rates(timing: dict) -> dict:
    counts, seconds, batches = timing["counts"], timing["seconds"], timing["batches"]
    later = sum(counts[1:]), sum(seconds[1:])
    return {
        "images_per_s": sum(counts) / sum(seconds),
        "batches_per_s": sum(batches) / sum(seconds),
        "epoch1_images_per_s": counts[0] / seconds[0] if counts[0] else math.nan,
        "later_images_per_s": later[0] / later[1] if later[0] else math.nan,
        "images_per_epoch": timing["images_per_epoch"],
        "labels_per_batch": timing["labels_per_batch"],
    }


# ----------------------------------------------------------------------------------------------
# the sources


def _memory(files, labels, size, channels, batch_size, epochs, work_dir: Path) -> dict:
    start = time.perf_counter()
    images, kept = decode_images(files, size, channels)
    decode_s = time.perf_counter() - start
    split = Split(images, torch.tensor(labels, dtype=torch.long)[kept])
    # the tensors load_dataset(source="memory") caches between runs, saved and loaded plainly (the
    # cache itself adds the fsyncs of an atomic write and a CRC check on read: docs/design.md)
    cache = work_dir / "memory-cache.pt"
    start = time.perf_counter()
    torch.save({"images": split.images, "kept": torch.tensor(kept)}, cache)
    save_s = time.perf_counter() - start
    start = time.perf_counter()
    torch.load(cache)
    load_s = time.perf_counter() - start
    same = all(torch.equal(split.images[i], decode_file(files[i], size, channels)) for i in _checked(len(files)))
    loader = batch_loader(split, batch_size, shuffle=True, drop_last=True, seed=0)
    assert isinstance(loader.sampler, EpochRandomSampler)  # shuffle=True
    timing = _timed_epochs(loader, epochs, channels, size, loader.sampler.set_epoch)
    return {
        "timing": timing,
        "prep_s": decode_s + save_s,
        "disk_bytes": cache.stat().st_size,
        "pixels_equal": same,
        "note": f"decode {decode_s:.2f} s + cache write {save_s:.2f} s; a later run reads the cache in {load_s:.2f} s",
    }


def _stream(files, labels, size, channels, batch_size, epochs, workers: int) -> dict:
    split = FileSplit.from_paths(files, labels, size, channels=channels, workers=workers)
    dataset = split.dataset()
    same = all(torch.equal(dataset[i][0], decode_file(files[i], size, channels)) for i in _checked(len(files)))
    loader = batch_loader(split, batch_size, shuffle=True, drop_last=True, seed=0)
    assert isinstance(loader.sampler, EpochRandomSampler)  # shuffle=True
    try:
        timing = _timed_epochs(loader, epochs, channels, size, loader.sampler.set_epoch)
    finally:
        del loader  # stops the persistent workers
    return {
        "timing": timing,
        "prep_s": 0.0,
        "disk_bytes": sum(Path(f).stat().st_size for f in files),
        "pixels_equal": same,
        "note": "no preparation; reads the image files",
    }


def _checked(n: int) -> list[int]:
    return sorted({round(k * (n - 1) / max(CHECKED_IMAGES - 1, 1)) for k in range(min(CHECKED_IMAGES, n))})


def _encoded_sample(item: tuple[int, str, int]) -> dict:
    """litdata ``optimize`` function: a file's original bytes, its label and its index."""
    index, path, label = item
    with open(path, "rb") as f:
        return {"index": index, "image": f.read(), "label": label}


def _canvas_sample(item: tuple[int, str, int, int, int]) -> dict:
    """litdata ``optimize`` function: a file decoded by ``decode_file`` to uint8 ``(C, S, S)``."""
    index, path, label, size, channels = item
    return {"index": index, "image": decode_file(path, size, channels), "label": label}


class DecodeBatch:
    """A litdata loader's ``collate_fn``: its samples (``{"index", "image", "label"}``) as our
    batch ``(uint8 (B, C, S, S), int64 (B,))``, the encoded images decoded (in the worker
    processes, where the collate function runs) as ``decode_file`` decodes files."""

    def __init__(self, size: int, channels: int, encoded: bool) -> None:
        self.size, self.channels, self.encoded = size, channels, encoded

    def image(self, sample: dict) -> Tensor:
        if self.encoded:
            return _decode_encoded(sample["image"], self.size, self.channels)
        return sample["image"]

    def __call__(self, samples: list[dict]) -> tuple[Tensor, Tensor]:
        images = torch.stack([self.image(s) for s in samples])
        return images, torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)


def _import_litdata():
    """litdata, with its check for a newer release on PyPI off (a benchmark stays offline)."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    import litdata  # optional (the litdata extra), and only after the variable above is set

    return litdata


def _litdata_read_options(ld, defaults: bool) -> dict:
    """``StreamingDataset`` arguments: a full shuffle within each chunk (``item_shuffle_window=0``;
    litdata's default shuffles blocks of 256 consecutive items, so batches from a class-sorted
    listing hold one or two classes), and each item deserialised on its own (``batch_decode=0``;
    with a full shuffle, the default decode windows serve one item per read). ``defaults``:
    litdata's own values instead. Only the arguments this litdata has are given."""
    if defaults:
        return {}
    accepted = inspect.signature(ld.StreamingDataset).parameters
    return {k: v for k, v in {"item_shuffle_window": 0, "batch_decode": 0}.items() if k in accepted}


def _litdata(
    files,
    labels,
    size,
    channels,
    batch_size,
    epochs,
    workers: int,
    work_dir: Path,
    canvas: bool,
    defaults: bool = False,
) -> dict:
    ld = _import_litdata()
    out = work_dir / ("litdata-canvas" if canvas else "litdata-jpeg")
    if out.exists():
        shutil.rmtree(out)
    inputs: list[tuple[Any, ...]]
    fn: Callable[[Any], dict]
    if canvas:
        inputs, fn = [(i, str(f), y, size, channels) for i, (f, y) in enumerate(zip(files, labels))], _canvas_sample
    else:
        inputs, fn = [(i, str(f), y) for i, (f, y) in enumerate(zip(files, labels))], _encoded_sample
    accepted = inspect.signature(ld.optimize).parameters
    options: dict[str, Any] = {"verbose": False} if "verbose" in accepted else {}  # library code does not print
    if "start_method" in accepted and "fork" in multiprocessing.get_all_start_methods():
        options["start_method"] = "fork"  # as our DataLoader workers start (litdata's default: spawn)
    start = time.perf_counter()
    ld.optimize(
        fn=fn, inputs=inputs, output_dir=str(out), chunk_bytes=CHUNK_BYTES, num_workers=max(workers, 1), **options
    )
    prep_s = time.perf_counter() - start
    collate = DecodeBatch(size, channels, encoded=not canvas)

    plain = ld.StreamingDataset(str(out), cache_dir=str(work_dir / "litdata-cache"))
    picked = [plain[i] for i in _checked(len(plain))]
    same = len(plain) == len(files) and all(
        torch.equal(collate.image(s), decode_file(files[int(s["index"])], size, channels)) for s in picked
    )
    del plain, picked

    read_options = _litdata_read_options(ld, defaults)
    dataset = ld.StreamingDataset(
        str(out), cache_dir=str(work_dir / "litdata-cache"), shuffle=True, drop_last=True, seed=0, **read_options
    )
    loader = ld.StreamingDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,  # as our batch_loader
        pin_memory=workers > 0 and torch.cuda.is_available(),
    )
    try:
        timing = _timed_epochs(loader, epochs, channels, size)
    finally:
        del loader
    kind = "decoded uint8 canvas" if canvas else "original file bytes, decoded by the workers"
    return {
        "timing": timing,
        "prep_s": prep_s,
        "disk_bytes": _dir_bytes(out),
        "pixels_equal": same,
        "note": f"litdata {ld.__version__}: optimize {prep_s:.2f} s into {CHUNK_BYTES} chunks ({kind}); "
        f"read with {read_options or 'its default options'}",
    }


# ----------------------------------------------------------------------------------------------


def run(
    root: str | Path = DEFAULT_DATASET,
    num_images: int = 10_000,
    image_size: int = 32,
    batch_size: int = 256,
    workers: int | None = None,
    epochs: int = 2,
    sources: Sequence[str] = SOURCES,
    work_dir: str | Path | None = None,
    channels: int = 3,
    litdata_defaults: bool = False,
) -> dict:
    """Measure each source on the same ``num_images`` images of the folder ``root``.

    Args:
        root: an image folder ``root/<class>/<image>``.
        num_images: images taken from it (see :func:`select_images`).
        image_size: the side of the uint8 images of the batches (shorter side resized, centre crop).
        batch_size: images per batch; only whole batches are served.
        workers: DataLoader worker processes of the streamed sources and of litdata's optimize
            (default: the usable CPU cores); ``0`` loads in this process.
        epochs: epochs timed (after one warm-up batch).
        sources: some of :data:`SOURCES`, measured in that order.
        work_dir: where the tensor cache and litdata's chunks are written (default: a temporary
            folder, removed at the end).
        channels: 3 (RGB) or 1 (grayscale); litdata's rows decode as ours do.
        litdata_defaults: read litdata's chunks with its default shuffle window and decode
            windows instead of a full shuffle and per-item decoding (see :func:`_litdata_read_options`).

    Returns:
        ``{"rows": [...], "images": N, "classes": ..., "root", "image_size", "batch_size",
        "workers", "epochs", "listing_s", "reading_s", "peak_rss_per_row"}``; a row has ``source``, ``label``,
        ``status`` (``"ok"`` or ``"skipped: ..."``), and when measured ``images_per_s``,
        ``epoch1_images_per_s``, ``later_images_per_s``, ``batches_per_s``, ``images_per_epoch``,
        ``labels_per_batch``, ``prep_s``, ``disk_bytes``, ``peak_rss``, ``pixels_equal``, ``note``
        and ``vs_memory`` (its images/s over the memory row's; ``None`` without that row).
    """
    workers = usable_cpus() if workers is None else workers
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources must be some of {', '.join(SOURCES)}, got {list(sources)}")
    for name, value, least in (
        ("image_size", image_size, 1),
        ("batch_size", batch_size, 1),
        ("epochs", epochs, 1),
        ("workers", workers, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images // batch_size * epochs < 2:
        raise ValueError(
            f"need at least 2 whole batches over all epochs (the first is a warm-up), got num_images="
            f"{num_images!r}, batch_size={batch_size}, epochs={epochs}"
        )

    start = time.perf_counter()
    files, labels, classes = select_images(root, num_images)
    listing_s = time.perf_counter() - start
    # every row finds the files in the page cache, and torchvision's image library loaded (its
    # first decode takes seconds), so that neither lands on the first row measured
    start = time.perf_counter()
    for path in files:
        path.read_bytes()
    reading_s = time.perf_counter() - start
    decode_file(files[0], image_size, channels)
    log.info(
        "%d images of %d classes from %s (listed in %.2f s, read in %.2f s)",
        len(files),
        len(classes),
        root,
        listing_s,
        reading_s,
    )

    temporary = tempfile.TemporaryDirectory(prefix="tcl-ssl-bench-data-") if work_dir is None else None
    work = Path(temporary.name) if temporary is not None else Path(str(work_dir))
    work.mkdir(parents=True, exist_ok=True)
    common = (files, labels, image_size, channels, batch_size, epochs)
    measure: dict[str, Callable[[], dict]] = {
        "memory": lambda: _memory(*common, work_dir=work),
        "stream": lambda: _stream(*common, workers=workers),
        "litdata": lambda: _litdata(*common, workers=workers, work_dir=work, canvas=False, defaults=litdata_defaults),
        "litdata-canvas": lambda: _litdata(
            *common, workers=workers, work_dir=work, canvas=True, defaults=litdata_defaults
        ),
    }
    rows, per_row = [], True
    try:
        for source in sources:
            row: dict[str, Any] = {"source": source, "label": LABELS[source]}
            if source.startswith("litdata"):
                try:
                    _import_litdata()
                except ImportError:
                    rows.append({**row, "status": "skipped: litdata is not installed (pip install 'tcl-ssl[litdata]')"})
                    continue
            gc.collect()
            per_row = reset_peak_rss() and per_row
            log.info("measuring %s", row["label"])
            result = measure[source]()
            rows.append({**row, "status": "ok", **_rates(result.pop("timing")), **result, "peak_rss": peak_rss()})
    finally:
        if temporary is not None:
            temporary.cleanup()
    memory = next((r["images_per_s"] for r in rows if r["source"] == "memory" and r["status"] == "ok"), None)
    for row in rows:
        if row["status"] == "ok":
            row["vs_memory"] = row["images_per_s"] / memory if memory else None
    return {
        "rows": rows,
        "images": len(files),
        "classes": len(classes),
        "root": str(root),
        "image_size": image_size,
        "batch_size": batch_size,
        "workers": workers,
        "epochs": epochs,
        "listing_s": listing_s,
        "reading_s": reading_s,
        "peak_rss_per_row": per_row,
    }


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def format_table(result: dict) -> str:
    """A Markdown table of :func:`run`'s rows."""
    lines = [
        "| source | images/s | epoch 1 images/s | later epochs images/s | batches/s | x memory "
        "| prep s (one-time) | disk MiB | peak RSS MiB | labels / batch | pixels = decode_file |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['label']} | {row['status']} |" + " |" * 9)
            continue
        ratio = "" if row["vs_memory"] is None else f"{row['vs_memory']:.2f}"
        later = "" if math.isnan(row["later_images_per_s"]) else f"{row['later_images_per_s']:,.0f}"
        lines.append(
            f"| {row['label']} | {row['images_per_s']:,.0f} | {row['epoch1_images_per_s']:,.0f} | {later} "
            f"| {row['batches_per_s']:,.1f} | {ratio} | {row['prep_s']:.2f} | {_mib(row['disk_bytes'])} "
            f"| {_mib(row['peak_rss'])} | {row['labels_per_batch']:.1f} | {'yes' if row['pixels_equal'] else 'NO'} |"
        )
    return "\n".join(lines)


def format_report(result: dict) -> str:
    """The header line, the table and one line per measured row (its preparation, its ratio)."""
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{result['images']:,} images of {result['classes']} classes from {result['root']} (listed in "
        f"{result['listing_s']:.2f} s, read into the page cache in {result['reading_s']:.2f} s before the rows), "
        f"{result['image_size']} px, batch {result['batch_size']}, "
        f"{result['workers']} workers, {result['epochs']} epoch(s) after a warm-up batch; "
        f"{usable_cpus()} CPU cores, load average {load:.1f} at the end; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); "
        f"peak RSS {'per row' if result['peak_rss_per_row'] else 'of the whole run (could not reset it per row)'}, "
        "main process only",
        "",
        format_table(result),
        "",
    ]
    for row in rows:
        ratio = "" if row["vs_memory"] is None else f"; {row['vs_memory']:.2f}x in-memory"
        lines.append(f"{row['source']}: {row['note']}; {row['images_per_epoch']:,} images per epoch{ratio}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``tcl-ssl bench data``: run the benchmark and print the table and the ratios."""
    parser = argparse.ArgumentParser(prog="tcl-ssl bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default=DEFAULT_DATASET, metavar="PATH", help="an image folder root/<class>/<image>"
    )
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the CPU cores)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--work-dir", default=None, help="where caches and chunks go (default: a temporary folder)")
    parser.add_argument(
        "--litdata-defaults",
        action="store_true",
        help="read litdata's chunks with its default shuffle window (256 items) and decode windows",
    )
    args = parser.parse_args(argv)
    result = run(
        args.dataset,
        args.num_images,
        args.image_size,
        args.batch_size,
        args.workers,
        args.epochs,
        args.sources,
        args.work_dir,
        litdata_defaults=args.litdata_defaults,
    )
    print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
