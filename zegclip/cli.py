"""``zegclip`` command line: segment a few images, convert the authors' checkpoints.

zegclip segment IMG... --vocab vocab.txt --out DIR [--checkpoint CKPT]
zegclip convert-official IN.pth OUT.safetensors --seen-classes voc|coco|FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from zegclip.labeler import (
    DEFAULT_METHOD,
    LabelerSpec,
    build_predictor,
    check_spec,
    encode_vocabulary_for,
)
from zegclip.predictor import Prediction
from zegclip.vocab import Vocabulary, VocabularyError, load_vocabulary

logger = logging.getLogger("zegclip")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 1 some images failed, 2 bad usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, VocabularyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zegclip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(required=True)
    _add_segment(
        sub.add_parser(
            "segment",
            help="label images with a vocabulary",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
    )
    _add_convert(
        sub.add_parser(
            "convert-official",
            help="convert an official ZegCLIP .pth",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
    )
    return parser


def _add_segment(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files (jpg, png, webp, bmp, tiff)")
    p.add_argument(
        "--vocab",
        required=True,
        help="vocabulary file: one class per line, comma-separated synonyms, # comments",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: <stem>.png, <stem>_overlay.png, <stem>.json per image (inputs "
        "sharing a stem, e.g. a.jpg and a.png, become a_jpg and a_png)",
    )
    p.add_argument(
        "--checkpoint",
        help="ZegCLIP/ZegOT checkpoint (ours or official .pth), path "
        "or URI; omit for training-free frozen-CLIP mode",
    )
    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help="training-free variant (maskclip, sclip, clearclip, naclip) when no --checkpoint",
    )
    p.add_argument("--clip-model", default="ViT-B-16", help="open_clip model (training-free)")
    p.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag")
    p.add_argument("--clip-weights", help="CLIP weights file or URI (offline machines)")
    p.add_argument(
        "--templates",
        help="template set (single, zegclip15, imagenet80) or file; default: the model's own",
    )
    p.add_argument(
        "--background",
        default="",
        help="comma-separated background words whose pixels become unlabelled",
    )
    p.add_argument(
        "--min-score",
        type=float,
        help="best-class score under which a pixel is "
        "unlabelled (255); default: the model's (ZegCLIP 0.5)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16"
    )
    p.add_argument(
        "--pamr-precision",
        default="fp32",
        help="fp32 (the papers') or compute: PAMR in --precision on CUDA (docs/gpu.md)",
    )
    p.set_defaults(run=_run_segment)


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="the authors' mmseg checkpoint (.pth)")
    p.add_argument(
        "output",
        help="output .safetensors file (CLIP weights embedded); a name without a suffix gets "
        "'.safetensors'",
    )
    p.add_argument(
        "--seen-classes",
        required=True,
        help="voc, coco, or a vocabulary file listing the training (seen) classes",
    )
    p.add_argument(
        "--templates",
        help="template set or file; default single for VOC-style "
        "(<= 20 prompt tokens) checkpoints, zegclip15 otherwise",
    )
    p.set_defaults(run=_run_convert)


def _run_segment(args: argparse.Namespace) -> int:
    spec = LabelerSpec(
        checkpoint=args.checkpoint,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        clip_weights=args.clip_weights,
        method=args.method,
        templates=args.templates,
        min_score=args.min_score,
        device=args.device,
        precision=args.precision,
        pamr_precision=args.pamr_precision,
        background=tuple(w.strip() for w in args.background.split(",") if w.strip()),
    )
    vocab = load_vocabulary(args.vocab)
    check_spec(spec, vocab)
    predictor = build_predictor(spec, vocab, encode_vocabulary_for(spec, vocab))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    paths = [Path(p) for p in args.images]
    for path, stem in zip(paths, output_stems(paths), strict=True):
        try:
            image = load_rgb(path)
        except (OSError, ValueError) as e:
            logger.error("%s: %s: %s", path, type(e).__name__, e)
            failures += 1
            continue
        write_outputs(out / stem, image, predictor.predict([image])[0], vocab)
        logger.info("%s -> %s.png", path, out / stem)
    print(f"segmented {len(args.images) - failures}/{len(args.images)} images into {out}")
    return 1 if failures else 0


def output_stems(paths: list[Path]) -> list[str]:
    """One distinct output name per input, from its file name only (never a directory part).

    The stem (``a.jpg`` -> ``a``) when no other input has it; else the name with its extension
    (``a.jpg`` -> ``a_jpg``, ``a.png`` -> ``a_png``); inputs that still collide (same name in
    two folders) get their position appended (``a_jpg_3``). Names that are empty or dots only
    become ``image``.
    """
    stems = [p.stem.strip(".") or "image" for p in paths]
    names = [(p.stem + "_" + p.suffix.lstrip(".")).strip("._") or "image" for p in paths]
    out = []
    for i, (stem, name) in enumerate(zip(stems, names, strict=True)):
        if stems.count(stem) == 1:
            out.append(stem)
        elif names.count(name) == 1:
            out.append(name)
        else:
            out.append(f"{name}_{i + 1}")
    return out


def load_rgb(path: Path) -> np.ndarray:
    """Decode any PIL-readable image to HWC uint8 RGB, honouring EXIF orientation."""
    with Image.open(path) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, PASCAL-VOC-style bit interleaving (stable per index)."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i + 1, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def write_outputs(stem: Path, image: np.ndarray, pred: Prediction, vocab: Vocabulary) -> None:
    """Write ``stem.png`` (index map), ``stem_overlay.png`` and ``stem.json`` (class stats)."""
    Image.fromarray(pred.label_map).save(stem.with_suffix(".png"))
    labelled = pred.label_map < len(vocab)
    colours = palette(len(vocab))[np.minimum(pred.label_map, len(vocab) - 1)]
    blend = np.where(labelled[..., None], 0.5 * image + 0.5 * colours, image)
    Image.fromarray(blend.astype(np.uint8)).save(stem.parent / f"{stem.name}_overlay.png")
    stats = class_statistics(pred, vocab)
    stem.with_suffix(".json").write_text(json.dumps(stats, indent=2))


def class_statistics(pred: Prediction, vocab: Vocabulary) -> dict:
    """Per-class pixels, fraction of the image and mean confidence, plus unlabelled pixels."""
    total = pred.label_map.size
    classes = []
    for idx, name in enumerate(vocab.names):
        pixels = int(pred.class_counts[idx])
        if pixels:
            conf = float(pred.confidence_sums[idx] / pixels)
            classes.append(
                {
                    "id": idx,
                    "name": name,
                    "pixels": pixels,
                    "fraction": pixels / total,
                    "mean_confidence": conf,
                }
            )
    unlabelled = total - int(pred.class_counts.sum())
    return {
        "height": pred.label_map.shape[0],
        "width": pred.label_map.shape[1],
        "unlabelled_pixels": unlabelled,
        "classes": classes,
    }


def _run_convert(args: argparse.Namespace) -> int:
    from zegclip.io.checkpoint import save_checkpoint
    from zegclip.io.convert import convert_official
    from zegclip.templates import resolve_templates
    from zegclip.train.datasets import SPLITS, seen_classes

    if args.seen_classes in SPLITS:
        seen = seen_classes(args.seen_classes)
    else:
        seen = tuple(load_vocabulary(args.seen_classes).names)
    templates = resolve_templates(args.templates) if args.templates else None
    model = convert_official(args.source, seen_classes=seen, templates=templates)
    output = Path(args.output)
    if not output.suffix:  # `convert-official SRC model`: say what the file is
        output = output.with_suffix(".safetensors")
    save_checkpoint(model, output, embed_clip=True)
    print(f"converted {args.source} -> {output} ({len(seen)} seen classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
