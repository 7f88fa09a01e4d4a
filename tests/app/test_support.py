"""The workbench's UI-free parts: settings, sentence history, the run launcher's arguments, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlm_tui.app.render import (
    FATE_STYLES,
    NEW_TOKEN_STYLE,
    SPECIAL_STYLE,
    bar,
    chunk_text,
    fills_text,
    short_ref,
)
from mlm_tui.fill import Fill, FillResult, MaskFills
from mlm_tui.history import History
from mlm_tui.home import history_path, settings_path
from mlm_tui.launcher import thread_split
from mlm_tui.settings import Settings, load_settings, save_settings

pytestmark = pytest.mark.usefixtures("home")


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
    settings_path().write_text(json.dumps({"theme": 3, "keep_history": "no", "unknown": 1, "fill_top_k": 0}))
    assert load_settings() == (Settings(), None)


def test_history_persists_dedupes_and_clears() -> None:
    history = History(persist=True)
    for sentence in ("a [MASK].", "b [MASK].", "a [MASK].", "  "):
        history.add(sentence)
    assert History(persist=True).items == ["b [MASK].", "a [MASK]."]
    history.clear()
    assert not history_path().exists()
    assert History(persist=True).items == []


def test_history_is_off_disk_by_default_and_an_old_file_is_kept_unused() -> None:
    History(persist=True).add("stored [MASK].")
    history = History()  # the default: memory only
    assert history.items == []
    history.add("secret [MASK].")
    assert json.loads(history_path().read_text()) == ["stored [MASK]."]
    history.set_persist(True)  # opting in merges what is stored under this session's sentences
    assert json.loads(history_path().read_text()) == ["stored [MASK].", "secret [MASK]."]
    history.set_persist(False)
    history.add("another secret [MASK].")
    assert json.loads(history_path().read_text()) == ["stored [MASK].", "secret [MASK]."]
    assert history.items[-1] == "another secret [MASK]."


def test_thread_split_leaves_training_the_most() -> None:
    assert thread_split(2) == (1, 1)
    app, train = thread_split(16)
    assert app + train == 16 and train > app >= 1


def test_a_path_reads_as_the_folder_that_names_it(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "20261205-abc"
    for folder in (run / "model", run / "checkpoints" / "checkpoint-500", tmp_path / "legal-bert"):
        folder.mkdir(parents=True)
    assert short_ref(str(run / "model")) == "20261205-abc/model"
    assert short_ref(str(run / "checkpoints" / "checkpoint-500")) == "20261205-abc/checkpoints/checkpoint-500"
    assert short_ref(str(tmp_path / "legal-bert")) == "legal-bert"
    assert short_ref("bert-base-uncased") == "bert-base-uncased"  # a hub id, not a path
    assert short_ref("not/here") == "not/here"


def test_bar() -> None:
    assert bar(0.0).strip() == "" and bar(1.0) == "█" * 20 and len(bar(0.33)) == 20


def test_chunk_text_is_the_tokenizers_decoding_with_specials_and_fates_styled() -> None:
    from transformers import AutoTokenizer

    from mlm_tui.chunking import decode
    from mlm_tui.starter import base_encoder_dir

    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir())
    ids = tokenizer("[CLS] version 2.0, see www.apache.org on hydrolysis [SEP] [CLS] rain",
                    add_special_tokens=False)["input_ids"]
    special = [i in tokenizer.all_special_ids for i in ids]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    fates: list[tuple[str, str] | None] = [None] * len(ids)
    fates[tokens.index("apache")] = ("mask", "")
    fates[tokens.index("rain")] = ("random", "snow")
    fates[tokens.index("see")] = ("kept", "")
    text = chunk_text(lambda part: decode(tokenizer, part), ids, special, fates)
    whole = decode(tokenizer, ids)
    assert text.plain == whole.replace("rain", "rain→snow")  # the text is the CLI's, plus the replacement
    assert "2. 0," in whole  # the tokenizer's own clean-up, not pieces joined by spaces
    styled = {text.plain[s.start:s.end]: s.style for s in text.spans}
    assert styled["apache"] == FATE_STYLES["mask"] and styled["see"] == FATE_STYLES["kept"]
    assert styled["rain"] == styled["→snow"] == FATE_STYLES["random"]
    assert styled["[CLS]"] == styled["[SEP]"] == SPECIAL_STYLE


def test_fill_text_shows_percentages_and_changes() -> None:
    main = FillResult("a", "x [MASK]", [MaskFills(1, [Fill("cat", 1, 0.312, "x cat"),
                                                      Fill("dog", 2, 0.1, "x dog")])], best="x cat")
    other = FillResult("b", "x [MASK]", [MaskFills(1, [Fill("dog", 2, 0.5, "x dog"),
                                                       Fill("eel", 3, 0.2, "x eel")])], best="x dog")
    text = fills_text(other, "b", baseline=main)
    plain = text.plain
    assert "50.0%" in plain and "▲40.0pp" in plain and "new" in plain
    # "new" (not among the baseline's fills) reads apart from an added token's cyan
    styled = {text.plain[s.start:s.end].strip(): s.style for s in text.spans}
    assert styled["new"] != NEW_TOKEN_STYLE
    assert "31.2%" in fills_text(main, "a").plain


def test_a_change_reads_equal_only_between_equal_percentages() -> None:
    def fills(score: float) -> FillResult:
        return FillResult("m", "x [MASK]", [MaskFills(1, [Fill("cat", 1, score, "x cat")])], best="x cat")

    near = fills_text(fills(0.1236), "b", baseline=fills(0.1234)).plain  # 12.4% against 12.3%
    assert "12.4%" in near and "▲0.02pp" in near and "=" not in near
    same = fills_text(fills(0.12341), "b", baseline=fills(0.12344)).plain  # both read 12.3%
    assert same.rstrip().endswith("=")


def test_a_fill_too_long_for_its_column_ends_in_an_ellipsis() -> None:
    result = FillResult("m", "x [MASK]", [MaskFills(1, [Fill("circumstances", 1, 0.5, "x circumstances"),
                                                        Fill("modification", 2, 0.2, "x modification")])],
                        best="x circumstances")
    compact = fills_text(result, "m", compact=True).plain
    assert "circumstan… " in compact and "modificati… " in compact  # 11 cells side by side
    assert "circumstances " in fills_text(result, "m").plain  # a wide column has room for the word
