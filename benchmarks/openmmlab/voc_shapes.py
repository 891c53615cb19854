"""A generated PASCAL-VOC-format dataset of coloured shapes, for the proxy scale of Tables 4 and 5.

Writes a real `VOCdevkit` layout that mmdet's `VOCDataset` and mmseg's `PascalVOCDataset` read with the
packaged configs unchanged except `data_root`:

    VOCdevkit/VOC2007/{JPEGImages,Annotations}/, ImageSets/Main/{trainval,test}.txt
    VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,SegmentationClassAug}/,
        ImageSets/Main/trainval.txt, ImageSets/Segmentation/{train,val,aug}.txt

Each object is a filled shape (ellipse, rectangle, triangle) whose class is the pair (shape, colour);
the classes carry real VOC names and indices (the first `num_classes` of VOC's 20), so boxes are in
the XML format of VOC (1-based corners) and masks are palette PNGs with VOC indices and a 255 "void"
border, as in the real SegmentationClass. Nothing is downloaded; the same seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.results import fingerprint_files

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SHAPES = ("ellipse", "rectangle", "triangle")
COLOURS = ((220, 40, 40), (40, 90, 220), (40, 180, 60), (230, 200, 30))
MANIFEST = "cacim_voc_shapes.json"


@dataclass(frozen=True)
class ShapesSpec:
    """How many images of each split and how big; `num_classes` VOC classes are used (at most 12)."""

    voc2007_trainval: int = 200
    voc2007_test: int = 300  # 300 images (~600 boxes): a 1-point mAP difference is above the eval noise
    voc2012_seg_train: int = 150
    voc2012_seg_aug: int = 150
    voc2012_seg_val: int = 100
    min_size: int = 160
    max_size: int = 320
    num_classes: int = 6
    max_objects: int = 3
    seed: int = 0


SMOKE = ShapesSpec(8, 4, 6, 4, 4, min_size=96, max_size=128, num_classes=3, max_objects=2)
PROXY = ShapesSpec()


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (bit-interleaved), flattened for `Image.putpalette`."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "ellipse":
        draw.ellipse(box, fill=fill)
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _render(rng: np.random.Generator, spec: ShapesSpec) -> tuple[Image.Image, np.ndarray, list[dict]]:
    """One image: textured background, non-overlapping shapes; returns (RGB image, label map, objects)."""
    width, height = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, size=2))
    base = rng.integers(60, 200, size=3)
    ramp = np.linspace(-30, 30, width)[None, :, None] + np.linspace(-20, 20, height)[:, None, None]
    pixels = base[None, None, :] + ramp + rng.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    labels = np.zeros((height, width), np.uint8)
    draw = ImageDraw.Draw(image)
    objects, taken = [], []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.integers(min(width, height) // 5, min(width, height) // 2 + 1))
            aspect = float(rng.uniform(0.7, 1.4))
            w, h = max(8, int(side * aspect)), max(8, int(side / aspect))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            box = (x0, y0, x0 + w - 1, y0 + h - 1)
            if all(
                box[2] < t[0] - 2 or t[2] < box[0] - 2 or box[3] < t[1] - 2 or t[3] < box[1] - 2
                for t in taken
            ):
                break
        else:
            continue
        taken.append(box)
        cls = int(rng.integers(0, spec.num_classes))
        shape, colour = SHAPES[cls % len(SHAPES)], COLOURS[cls // len(SHAPES)]
        fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
        _draw_shape(draw, shape, box, fill)
        layer = Image.new("L", (width, height), 0)
        _draw_shape(ImageDraw.Draw(layer), shape, box, 255)
        inside = np.asarray(layer) > 0
        ys, xs = np.nonzero(inside)
        labels[inside] = cls + 1
        objects.append(
            {"name": VOC_CLASSES[cls], "box": (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))}
        )
    return image, labels, objects


def _void_border(labels: np.ndarray) -> np.ndarray:
    """Mark the 1-pixel boundary of each object 255, like the 'void' outline of VOC's SegmentationClass."""
    padded = np.pad(labels, 1, mode="edge")
    edge = np.zeros_like(labels, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != labels
    out = labels.copy()
    out[edge & (labels > 0)] = 255
    return out


def _annotation_xml(image_id: str, folder: str, size: tuple[int, int], objects: list[dict]) -> str:
    width, height = size
    parts = [
        f"<annotation><folder>{folder}</folder><filename>{image_id}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>1</segmented>",
    ]
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        parts.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def _write_year(
    root: Path, year: str, splits: dict[str, int], rng: np.random.Generator, spec: ShapesSpec
) -> None:
    """Write one VOC<year> folder; `splits` maps split name -> image count (the order fixes the ids)."""
    base = root / f"VOC{year}"
    subs = ["JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation"]
    for sub in subs + (["SegmentationClass", "SegmentationClassAug"] if year == "2012" else []):
        (base / sub).mkdir(parents=True)
    palette = voc_palette()
    numbers = itertools.count(1)
    ids = {split: [f"{year}_{next(numbers):06d}" for _ in range(count)] for split, count in splits.items()}
    for split, names in ids.items():
        for image_id in names:
            image, labels, objects = _render(rng, spec)
            image.save(base / "JPEGImages" / f"{image_id}.jpg", quality=92)
            (base / "Annotations" / f"{image_id}.xml").write_text(
                _annotation_xml(image_id, f"VOC{year}", image.size, objects)
            )
            if year == "2012" and split in ("seg_train", "seg_val"):
                mask = Image.fromarray(_void_border(labels), mode="P")
                mask.putpalette(palette)
                mask.save(base / "SegmentationClass" / f"{image_id}.png")
            if year == "2012":
                Image.fromarray(labels, mode="L").save(base / "SegmentationClassAug" / f"{image_id}.png")

    def listing(path: str, names: list[str]) -> None:
        (base / path).write_text("".join(f"{n}\n" for n in names))

    if year == "2007":
        listing("ImageSets/Main/trainval.txt", ids["trainval"])
        listing("ImageSets/Main/test.txt", ids["test"])
    else:
        listing("ImageSets/Main/trainval.txt", ids["seg_train"] + ids["seg_aug"])
        listing("ImageSets/Segmentation/train.txt", ids["seg_train"])
        listing("ImageSets/Segmentation/aug.txt", ids["seg_aug"])
        listing("ImageSets/Segmentation/val.txt", ids["seg_val"])


def write_voc_shapes(root: str | Path, spec: ShapesSpec = PROXY) -> str:
    """Write `<root>/VOCdevkit` (atomically: a temporary folder renamed at the end); returns its fingerprint.

    If `root` already holds a dataset written with the same spec, nothing is written.
    """
    root = Path(root)
    manifest = root / "VOCdevkit" / MANIFEST
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved["spec"] == asdict(spec):
            return saved["fingerprint"]
        raise SystemExit(
            f"error: {root / 'VOCdevkit'} holds a generated dataset of another spec; delete it to regenerate"
        )
    if (root / "VOCdevkit").exists():
        raise SystemExit(
            f"error: {root / 'VOCdevkit'} exists and is not a generated dataset; pick another root"
        )
    if not 1 <= spec.num_classes <= len(SHAPES) * len(COLOURS):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES) * len(COLOURS)}, got {spec.num_classes}")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".VOCdevkit."))
    try:
        rng = np.random.default_rng(spec.seed)
        _write_year(tmp, "2007", {"trainval": spec.voc2007_trainval, "test": spec.voc2007_test}, rng, spec)
        _write_year(
            tmp,
            "2012",
            {
                "seg_train": spec.voc2012_seg_train,
                "seg_aug": spec.voc2012_seg_aug,
                "seg_val": spec.voc2012_seg_val,
            },
            rng,
            spec,
        )
        fingerprint = fingerprint_files(p for p in tmp.rglob("*") if p.is_file())
        (tmp / MANIFEST).write_text(json.dumps({"spec": asdict(spec), "fingerprint": fingerprint}, indent=1))
        try:
            os.replace(tmp, root / "VOCdevkit")
        except OSError:  # another process finished writing the same dataset first: keep theirs
            if not manifest.is_file() or json.loads(manifest.read_text())["spec"] != asdict(spec):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fingerprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a generated VOC-format dataset of coloured shapes.")
    parser.add_argument("root", help="folder that will hold VOCdevkit/")
    parser.add_argument("--scale", choices=["smoke", "proxy"], default="proxy")
    args = parser.parse_args(argv)
    fingerprint = write_voc_shapes(args.root, SMOKE if args.scale == "smoke" else PROXY)
    print(f"{args.root}/VOCdevkit fingerprint {fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
