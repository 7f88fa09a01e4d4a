"""The training settings are declared once: the CLI, the form and a launched run's arguments agree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields

import pytest

from mlm_tui.cli import build_parser
from mlm_tui.errors import FieldError, UsageError
from mlm_tui.run_settings import (
    TrainConfig,
    config_from_args,
    config_from_form,
    form_fields,
    given_settings,
    resumable,
    train_argv,
)

# A value other than the default for every setting: a new setting without one fails the round trip below.
# (--no-general, which refuses a --general beside it, gets its own round trip.)
CHANGED = {"corpus": "c.jsonl", "model": "m", "chunk_size": 64, "mlm_probability": 0.2,
           "whole_word_mask": True, "batch_size": 8, "learning_rate": 1e-4, "weight_decay": 0.0,
           "warmup_steps": 5, "epochs": 2.5, "max_steps": None, "train_size": 100, "test_size": 20, "seed": 7,
           "general": "g.txt", "no_general": False, "device": "cpu", "precision": "fp32",
           "gradient_accumulation": 2, "eval_steps": 10,
           "save_steps": 20, "logging_steps": 3, "text_field": "body", "freeze_embeddings": True,
           "allow_pickle": True, "subset": "s", "train_split": "tr", "test_split": "te", "streaming": True,
           "report_to": "tensorboard", "processes": 2, "nodes": 2, "node_rank": 1, "main_address": "h:1",
           "extend_vocab": 100, "min_count": 3, "keep_checkpoints": 3, "bpc_chars": 500}


def parse(argv: list[str]) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_every_setting_survives_the_launch_arguments() -> None:
    assert set(CHANGED) == {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**CHANGED)
    assert parse(train_argv(config)) == config
    skipped = TrainConfig(**{**CHANGED, "general": None, "no_general": True})
    assert parse(train_argv(skipped)) == skipped
    steps = TrainConfig(corpus="c.jsonl", max_steps=9, epochs=5.0)  # max steps win, as on the command line
    assert parse(train_argv(steps)).max_steps == 9


def test_every_setting_is_in_the_form_and_a_filled_form_is_the_config() -> None:
    boxes = {f.name: f for f in form_fields()}
    assert list(boxes) == [f.name for f in fields(TrainConfig)]
    values = {name: value if isinstance(value, bool) else "" if value is None else str(value)
              for name, value in CHANGED.items()}
    config, errors = config_from_form(values)
    assert errors == {} and config == TrainConfig(**CHANGED)
    basic = {n for n, f in boxes.items() if not f.advanced}
    assert basic >= {"corpus", "model", "chunk_size", "learning_rate"}
    assert {"warmup_steps", "precision", "device", "gradient_accumulation", "eval_steps", "save_steps",
            "text_field", "freeze_embeddings"} <= {n for n, f in boxes.items() if f.advanced}


def test_a_blank_form_takes_the_defaults_and_names_every_bad_box() -> None:
    config, errors = config_from_form({"corpus": "c.jsonl"})
    assert errors == {} and config == TrainConfig(corpus="c.jsonl")
    config, errors = config_from_form({"corpus": "", "chunk_size": "ten", "learning_rate": "-1",
                                       "batch_size": "0", "device": "tpu"})
    assert config is None
    assert errors == {"corpus": "Corpus: give a corpus file, folder or hub dataset",
                      "chunk_size": "Chunk size: not a whole number: 'ten'",
                      "learning_rate": "Learn. rate must be positive (got -1.0)",
                      "batch_size": "Batch size must be at least 1 (got 0)",
                      "device": "Device must be auto, cpu or cuda (got tpu)"}  # every bad box at once
    _, errors = config_from_form({"corpus": "c", "learning_rate": "-1", "batch_size": "0", "device": "tpu"})
    assert errors == {"learning_rate": "Learn. rate must be positive (got -1.0)",
                      "batch_size": "Batch size must be at least 1 (got 0)",
                      "device": "Device must be auto, cpu or cuda (got tpu)"}


def test_device_defaults_are_one_fact_for_the_form_and_the_trainer() -> None:
    batch = next(f for f in form_fields() if f.name == "batch_size")
    config = TrainConfig(corpus="c")
    for device in ("cpu", "cuda"):
        assert batch.placeholder(device) == f"auto: {config.on_device('batch_size', device)} on {device}"
    assert (config.on_device("batch_size", "cuda"), config.on_device("test_size", "cpu")) == (64, 200)
    assert TrainConfig(corpus="c", batch_size=3).on_device("batch_size", "cuda") == 3


@pytest.mark.parametrize(("argv", "flag"), [
    (["--learning-rate=-1"], "--learning-rate must be positive (got -1.0)"),
    (["--mlm-probability=1.5"], "--mlm-probability must be between 0 and 1 (got 1.5)"),
    (["--gradient-accumulation=0"], "--gradient-accumulation must be at least 1 (got 0)"),
    (["--weight-decay=nan"], "--weight-decay must be zero or more (got nan)"),
])
def test_bad_values_name_their_flag(cli, argv, flag) -> None:
    code, _, err = cli("train", "c.jsonl", *argv)
    assert code == 2 and f"error: {flag}\n" == err


def test_epochs_and_max_steps_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="not allowed with argument"):
        parse(["train", "c", "--epochs", "2", "--max-steps", "3"])


def test_values_that_look_like_options_stay_values() -> None:
    config = TrainConfig(corpus="-notes.txt", model="--json", text_field="--resume=x")
    argv = train_argv(config)
    assert argv[-2:] == ["--", "-notes.txt"] and "--text-field=--resume=x" in argv
    args = build_parser().parse_args(argv)
    assert args.resume is None and args.json is False
    assert config_from_args(args) == config


def test_only_what_was_given_counts_as_given() -> None:
    assert given_settings(build_parser().parse_args(["train", "--resume", "x"])) == {}
    argv = ["--model", "m", "train", "--resume", "x", "--seed", "1"]
    given = given_settings(build_parser().parse_args(argv))
    assert given == {"model": "m", "seed": 1}


def test_resume_applies_the_resumable_settings_and_refuses_the_rest() -> None:
    assert set(resumable()) == {"max_steps", "epochs", "eval_steps", "save_steps", "logging_steps", "device",
                                "allow_pickle", "report_to", "node_rank", "main_address", "keep_checkpoints"}
    recorded = TrainConfig(corpus="c", chunk_size=32, max_steps=8)
    config, applied = recorded.resumed_with({"max_steps": 12, "eval_steps": 4, "chunk_size": 32})
    assert (config.max_steps, config.eval_steps, applied) == (12, 4, {"max_steps": 12, "eval_steps": 4})
    config, applied = recorded.resumed_with({"epochs": 3.0})  # the default, but it replaces max steps
    assert (config.max_steps, config.epochs, applied) == (None, 3.0, {"epochs": 3.0})
    for name, value in (("chunk_size", 64), ("seed", 1), ("model", "other"), ("learning_rate", 1.0),
                        ("corpus", "d"), ("text_field", "body"), ("batch_size", 2)):
        with pytest.raises(FieldError, match="cannot change when resuming a run") as caught:
            recorded.resumed_with({name: value})
        assert caught.value.field == name
    with pytest.raises(FieldError, match="must be at least 1"):
        recorded.resumed_with({"max_steps": 0})


@pytest.mark.parametrize(("field", "value", "words"), [
    ("chunk_size", "32", "chunk_size is '32', not a whole number"),
    ("chunk_size", True, "chunk_size is True, not a whole number"),
    ("learning_rate", "fast", "learning_rate is 'fast', not a number or auto"),
    ("whole_word_mask", 1, "whole_word_mask is 1, not true or false"),
    ("model", None, "model is None, not text"),
    ("chunk_size", -3, "chunk_size must be at least 2 (got -3)"),
])
def test_a_recorded_config_of_the_wrong_type_names_the_field(field, value, words) -> None:
    with pytest.raises(FieldError) as caught:
        TrainConfig.from_record({"corpus": "c", field: value})
    assert caught.value.field == field and caught.value.named(lambda key: key) == words


def test_a_recorded_config_takes_defaults_for_what_it_lacks() -> None:
    record = {"corpus": "c", "batch_size": None, "chunk_size": 32, "plan": {}, "versions": {}}
    assert TrainConfig.from_record(record) == TrainConfig(corpus="c", chunk_size=32)
    assert all(f.default is not MISSING for f in fields(TrainConfig) if f.name != "corpus")


def _option_help(command: list[str]) -> dict[str, str | None]:
    """Each option of a subcommand by its flag: its help text."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command[0]]
    return {a.option_strings[0] if a.option_strings else a.dest: a.help for a in sub._actions}


@pytest.mark.parametrize("command", ["chunks", "eval", "vocab", "lr-find"])
def test_commands_that_read_a_corpus_take_its_settings_as_train_declares_them(command) -> None:
    train, other = _option_help(["train"]), _option_help([command])
    shared = ["corpus", "--model", "--text-field", "--subset", "--train-split", "--test-split", "--streaming"]
    if command != "vocab":
        shared.append("--chunk-size")
    assert {flag: other[flag] for flag in shared} == {flag: train[flag] for flag in shared}


@pytest.mark.parametrize("command", ["chunks", "eval"])
def test_the_chunk_size_bound_holds_for_every_command(cli, command) -> None:
    code, _, err = cli(command, "c.jsonl", "--chunk-size", "1")
    assert (code, err) == (2, "error: --chunk-size must be at least 2 (got 1)\n")


def test_a_command_s_settings_take_their_declared_defaults_and_the_top_level_model() -> None:
    from mlm_tui.run_settings import complete_settings

    args = build_parser().parse_args(["--model", "m", "chunks", "c.jsonl"])
    complete_settings(args)
    assert (args.model, args.text_field, args.chunk_size, args.streaming) == ("m", "text", 128, False)


def test_an_error_names_its_settings_in_the_words_of_the_face_that_shows_it() -> None:
    from mlm_tui.errors import told
    from mlm_tui.run_settings import flag, label

    error = FieldError("mlm_probability", "no masked token at {field} 0.01: raise {field} or {chunk_size}",
                       also=("chunk_size",))
    assert told(error, flag) == "no masked token at --mlm-probability 0.01: raise --mlm-probability or " \
                                "--chunk-size"
    assert told(error, label) == "no masked token at Mask prob. 0.01: raise Mask prob. or Chunk size"
    assert str(error) == "no masked token at mlm probability 0.01: raise mlm probability or chunk size"
    _, problems = config_from_form({"corpus": "c", "mlm_probability": "2"})
    assert problems == {"mlm_probability": "Mask prob. must be between 0 and 1 (got 2.0)"}


@pytest.mark.parametrize(("argv", "said"), [
    ([], "'command': None"), (["--model", "m"], "'model': 'm'"),
    (["--data", "c.csv", "--text-field", "body"], "'text_field': 'body'"),
    (["--model", "m", "chunks", "c.jsonl"], "'command': 'chunks'"), (["--modle", "m"], "invalid choice"),
    (["--model"], "--model: expected one argument"), (["fil", "x"], "invalid choice: 'fil'"),
    (["--help"], "lr-find")])
def test_the_workbench_start_reads_its_arguments_as_the_whole_parser_does(
        argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`mlm-tui` with no command reads only its own options (`parse_args`, for the first paint): the
    same arguments, errors and help as the parser of every command."""
    from mlm_tui.cli import parse_args

    def read(parse: Callable[[list[str]], object]) -> str:
        try:
            return str(vars(parse(argv)))
        except UsageError as exc:
            return f"error: {exc}"
        except SystemExit as exc:  # --help
            return f"exit {exc.code}: {capsys.readouterr().out}"

    assert read(parse_args) == read(build_parser().parse_args)
    assert said in read(parse_args)
