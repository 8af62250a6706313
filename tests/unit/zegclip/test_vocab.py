"""Vocabulary files and template sets."""

from __future__ import annotations

import pytest

from zegclip.templates import IMAGENET80, ZEGCLIP15, resolve_templates
from zegclip.text import flat_names, synonym_index
from zegclip.vocab import VocabularyError, load_vocabulary, parse_vocabulary


def test_parses_synonyms_comments_and_blank_lines():
    vocab = parse_vocabulary(["# header", "car, automobile ,auto", "", "road  # paved", "sky"])
    assert vocab.names == ["car", "road", "sky"]
    assert vocab.synonyms[0] == ("car", "automobile", "auto")
    assert flat_names(vocab) == ["car", "automobile", "auto", "road", "sky"]
    assert synonym_index(vocab).tolist() == [0, 0, 0, 1, 2]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["# nothing"], "no classes"),
        (["car", "Car"], "already appears on line 1"),
        (["car, road", "road"], "already appears"),
        (["car,", "road"], "empty name"),
        (["x" * 121], "keep names under 120"),
    ],
)
def test_rejects_bad_vocabularies_with_the_line(lines, message):
    with pytest.raises(VocabularyError, match=message):
        parse_vocabulary(lines, source="v.txt")


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--vocab"):
        load_vocabulary(tmp_path / "none.txt")


def test_template_sets_and_files(tmp_path):
    assert len(IMAGENET80) == len(set(IMAGENET80)) == 80
    assert len(ZEGCLIP15) == 15
    assert resolve_templates("single") == ("a photo of a {}",)
    f = tmp_path / "t.txt"
    f.write_text("a {} here\n# comment\nthe {}\n")
    assert resolve_templates(str(f)) == ("a {} here", "the {}")
    f.write_text("no placeholder\n")
    with pytest.raises(ValueError, match="placeholder"):
        resolve_templates(str(f))
    with pytest.raises(ValueError, match="neither a known set"):
        resolve_templates("imagenet81")
