"""The workbench's UI-free parts: settings, sentence history, the run launcher's arguments, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlm_tui.app.render import bar, chunk_text, fills_text
from mlm_tui.fill import Fill, FillResult, MaskFills
from mlm_tui.history import History
from mlm_tui.home import history_path, settings_path
from mlm_tui.launcher import thread_split
from mlm_tui.settings import Settings, load_settings, save_settings


@pytest.fixture(autouse=True)
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path))
    return tmp_path


def test_settings_round_trip() -> None:
    save_settings(Settings(theme="mlm-light", keep_history=False))
    settings, problem = load_settings()
    assert problem is None
    assert settings == Settings(theme="mlm-light", keep_history=False)


def test_corrupt_settings_are_reported_and_ignored() -> None:
    settings_path().write_text("{not json")
    settings, problem = load_settings()
    assert settings == Settings()
    assert problem is not None and "settings" in problem


def test_settings_of_the_wrong_type_keep_their_defaults() -> None:
    settings_path().write_text(json.dumps({"theme": 3, "keep_history": "no", "unknown": 1}))
    assert load_settings() == (Settings(), None)


def test_history_persists_dedupes_and_clears() -> None:
    history = History()
    for sentence in ("a [MASK].", "b [MASK].", "a [MASK].", "  "):
        history.add(sentence)
    assert History().items == ["b [MASK].", "a [MASK]."]
    history.clear()
    assert not history_path().exists()
    assert History().items == []


def test_history_kept_nowhere_when_persistence_is_off() -> None:
    History().add("secret [MASK].")
    history = History(persist=False)
    history.set_persist(False)
    history.add("another secret [MASK].")
    assert not history_path().exists()
    assert history.items == ["another secret [MASK]."]


def test_thread_split_leaves_training_the_most() -> None:
    assert thread_split(2) == (1, 1)
    app, train = thread_split(16)
    assert app + train == 16 and train > app >= 1


def test_bar_and_literal_special_tokens() -> None:
    assert bar(0.0).strip() == "" and bar(1.0) == "█" * 20 and len(bar(0.33)) == 20
    text = chunk_text(["[CLS]", "hydro", "##lysis", "[SEP]", "[CLS]", "rain"],
                      [True, False, False, True, True, False], [False, True, True, False, False, False])
    assert text.plain == "[CLS] hydrolysis [SEP] [CLS] rain"
    styled = {text.plain[s.start:s.end] for s in text.spans}
    assert "[CLS]" in styled and "hydro" in styled


def test_fill_text_shows_percentages_and_changes() -> None:
    main = FillResult("a", "x [MASK]", [MaskFills(1, [Fill("cat", 1, 0.312, "x cat"),
                                                      Fill("dog", 2, 0.1, "x dog")])], best="x cat")
    other = FillResult("b", "x [MASK]", [MaskFills(1, [Fill("dog", 2, 0.5, "x dog"),
                                                       Fill("eel", 3, 0.2, "x eel")])], best="x dog")
    plain = fills_text(other, "b", baseline=main).plain
    assert "50.0%" in plain and "▲40.0" in plain and "new" in plain
    assert "31.2%" in fills_text(main, "a").plain
