"""Class names from a Label Studio labelling config: the ``<Label value>`` of its ``BrushLabels``.

Example::

    <View>
      <Image name="image" value="$image"/>
      <BrushLabels name="tag" toName="image">
        <Label value="car"/><Label value="road"/>
      </BrushLabels>
    </View>

gives the classes ``car, road``; predictions go from ``tag`` to ``image`` and the image URL is
the task's ``data["image"]``.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from zegclip.vocab import Vocabulary, parse_vocabulary

MAX_CONFIG_CHARS = 1_000_000
MAX_LABELS = 255  # uint8 label maps keep 255 for "unlabelled"


class LabelConfigError(ValueError):
    """A labelling config the backend cannot serve; the message says what to change."""


@dataclass(frozen=True)
class ProjectLabels:
    """What one labelling config asks for.

    Attributes:
        names: class names in ``<Label>`` order (label index order of the predictions).
        from_name / to_name: the ``BrushLabels`` name and the ``Image`` it paints on.
        data_key: task data field holding the image URL (``$image`` -> ``image``).
        key: stable id of (names) for caches: the same classes share one predictor.
    """

    names: tuple[str, ...]
    from_name: str
    to_name: str
    data_key: str

    @property
    def key(self) -> str:
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]

    @property
    def vocabulary(self) -> Vocabulary:
        """One class per label, the label text as its only name."""
        return Vocabulary(tuple((n,) for n in self.names))


def parse_label_config(xml: str) -> ProjectLabels:
    """Read the first ``BrushLabels`` of ``xml`` and the ``Image`` it targets.

    Raises:
        LabelConfigError: not XML, no ``BrushLabels`` with labels, no matching ``Image``,
            unusable or repeated label names, more than ``MAX_LABELS`` labels.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("empty labelling config")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError(f"labelling config over {MAX_CONFIG_CHARS} characters")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise LabelConfigError(f"labelling config is not valid XML ({e})") from e
    brush = next(root.iter("BrushLabels"), None)
    if brush is None:
        raise LabelConfigError("the labelling config has no <BrushLabels>; add one with a <Label>")
    names = tuple(label.get("value", "") for label in brush.iter("Label"))
    _check_names(names)
    from_name, to_name = brush.get("name"), brush.get("toName")
    image = next((i for i in root.iter("Image") if i.get("name") == to_name), None)
    if not from_name or image is None:
        raise LabelConfigError(
            f"<BrushLabels name={from_name!r} toName={to_name!r}> must name an <Image name=...>"
        )
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f"<Image name={to_name!r}> value {value!r}: expected '$field'")
    return ProjectLabels(names, from_name, to_name, value[1:])


def _check_names(names: tuple[str, ...]) -> None:
    if not names:
        raise LabelConfigError("<BrushLabels> has no <Label value=...>")
    if len(names) > MAX_LABELS:
        raise LabelConfigError(f"{len(names)} labels; at most {MAX_LABELS} are supported")
    # The vocabulary-file rules (non-empty, short, unique ignoring case); commas and '#' are
    # plain text in a label, so they are neutralised for the check only.
    lines = [n.replace(",", " ").replace("#", " ") if n.strip() else "" for n in names]
    try:
        parse_vocabulary([line or "," for line in lines], source="<BrushLabels>")
    except ValueError as e:
        raise LabelConfigError(str(e)) from e
