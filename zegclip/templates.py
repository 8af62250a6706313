"""Prompt template sets for class-name embeddings.

* ``single``: ZegCLIP's VOC embedding, ``"a photo of a {}"`` (no period; get_embedding.ipynb).
* ``zegclip15``: ZegCLIP's COCO-Stuff set of 15 templates, averaged after per-template L2 norm.
* ``imagenet80``: the 80 ImageNet templates from CLIP (Radford et al. 2021), the training-free
  segmentation methods' recipe (MaskCLIP, SCLIP, ClearCLIP, NACLIP).
* any other value is read as a file path: one template per line, each containing ``{}``.
"""

from __future__ import annotations

from pathlib import Path

SINGLE = ("a photo of a {}",)

ZEGCLIP15 = (
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "a {} in the scene.",
    "a photo of a {} in the scene.",
    "There is a {} in the scene.",
    "There is the {} in the scene.",
    "This is a {} in the scene.",
    "This is the {} in the scene.",
    "This is one {} in the scene.",
)

IMAGENET80 = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "single": SINGLE,
    "zegclip15": ZEGCLIP15,
    "imagenet80": IMAGENET80,
}


def resolve_templates(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn a template-set name, a file path or an explicit list into a tuple of templates.

    Raises:
        ValueError: unknown name that is not a file, or a template without ``{}``.
    """
    if isinstance(spec, (list, tuple)):
        templates = tuple(spec)
    elif spec in TEMPLATE_SETS:
        templates = TEMPLATE_SETS[spec]
    elif Path(spec).is_file():
        lines = Path(spec).read_text(encoding="utf-8").splitlines()
        templates = tuple(t.strip() for t in lines if t.strip() and not t.startswith("#"))
    else:
        raise ValueError(
            f"templates '{spec}' is neither a known set ({', '.join(TEMPLATE_SETS)}) nor a file."
        )
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"every template needs a '{{}}' placeholder; bad: {bad or 'none given'}")
    return templates
