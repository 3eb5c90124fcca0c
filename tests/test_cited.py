"""Every typed figure in colab_tts/data/cited/ names a public source a reader can open."""

import json

import pytest

from colab_tts import cited as cited_mod
from colab_tts.cited import SOURCE_FORMS, all_cited, cited

ENTRIES = all_cited()


def test_there_are_figures():
    assert len(ENTRIES) >= 1


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda c: c.key)
def test_every_figure_has_a_public_source(entry):
    assert any(form.match(entry.source) for form in SOURCE_FORMS), (
        f"{entry.key}: source must be a URL or 'owner/repo path @commit', got {entry.source!r}")
    assert entry.unit, f"{entry.key}: say the unit ('' is not one; use 'count' or 'text')"
    assert "facts.md" not in entry.source and "shared/" not in entry.source


def test_unknown_names_get_one_clear_error():
    with pytest.raises(ValueError, match="topic.name"):
        cited("no_dot")
    with pytest.raises(ValueError, match="topics:"):
        cited("nosuchtopic.x")


def test_a_file_without_a_source_is_caught(tmp_path, monkeypatch):
    (tmp_path / "demo.json").write_text(json.dumps({"x": {"value": 1, "unit": "count", "source": "my notes"}}))
    monkeypatch.setattr(cited_mod, "DATA", tmp_path)
    cited_mod._topic.cache_clear()
    try:
        bad = [c for c in cited_mod.all_cited() if not any(f.match(c.source) for f in SOURCE_FORMS)]
        assert [c.key for c in bad] == ["demo.x"]
    finally:
        cited_mod._topic.cache_clear()
