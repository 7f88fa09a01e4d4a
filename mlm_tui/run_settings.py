"""The training settings of a run, declared once.

Each `TrainConfig` field carries its flag, help, form label, kind, device-dependent default and whether it
may change on `--resume`, as `run_mlm.py`'s dataclasses carry theirs for `HfArgumentParser`. The `train`
subparser, the config read back from its arguments, the Train form of the workbench and the argument list
of a launched run are all generated from here, so adding a setting is one edit and the front ends cannot
drift apart. Nothing here imports torch: the workbench builds its form from it at start.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from mlm_tui.errors import FieldError, in_words

Kind = Literal["text", "path", "integer", "number", "choice", "flag"]
Check = Callable[[Any], str | None]  # the problem with a value, worded after the setting's name, or None

RESUME_REFUSED = ("cannot change when resuming a run: it would change its data order and masks (start a new "
                  "run)")


def _at_least(minimum: int) -> Check:
    return lambda v: None if v >= minimum else f"must be at least {minimum} (got {v})"


def _positive(v: float) -> str | None:
    return None if math.isfinite(v) and v > 0 else f"must be positive (got {v})"


def _non_negative(v: float) -> str | None:
    return None if math.isfinite(v) and v >= 0 else f"must be zero or more (got {v})"


def _fraction(v: float) -> str | None:
    return None if 0 < v < 1 else f"must be between 0 and 1 (got {v})"


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (which Accelerate's `set_seed` calls) takes no more


def _seed(v: int) -> str | None:
    return None if 0 <= v <= SEED_MAX else f"must be between 0 and {SEED_MAX} (got {v})"


def _by_device(cuda: int, cpu: int) -> Callable[[str], int]:
    return lambda device: cuda if device == "cuda" else cpu


@dataclass(frozen=True)
class Setting:
    """What the front ends need to know about one training setting."""

    label: str  # the form's label
    help: str
    kind: Kind
    choices: tuple[str, ...] = ()
    check: Check | None = None
    advanced: bool = False  # folded away in the form
    on_resume: bool = False  # may change on --resume: it leaves the data order and the masks as they were
    auto: Callable[[str], Any] | None = None  # the value a blank takes on a device ("cuda" or "cpu")
    blank: str = ""  # what a blank means when it is not a device default ("all", "from epochs")
    words: tuple[str, ...] = ()  # words a number setting takes besides numbers ("auto")


def setting(default: Any, label: str, help: str, kind: Kind, **meta: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(label, help, kind, **meta)})


@dataclass
class TrainConfig:
    corpus: str = setting(MISSING, "Corpus", "corpus file, folder or hub dataset", "path")
    model: str = setting("starter", "Model", "the model (a run starts from it): directory, run id, starter "
                         "or hub id", "text")
    chunk_size: int = setting(128, "Chunk size", "tokens per chunk", "integer", check=_at_least(2))
    mlm_probability: float = setting(0.15, "Mask prob.", "share of tokens masked", "number", check=_fraction)
    whole_word_mask: bool = setting(False, "Whole-word masking", "mask all pieces of a word together", "flag")
    batch_size: int | None = setting(None, "Batch size", "chunks per step and process", "integer",
                                     check=_at_least(1), auto=_by_device(64, 16))
    learning_rate: float | str = setting("auto", "Learn. rate", "peak learning rate (AdamW, linear decay); "
                                         "auto: a short range test on the run's own batches picks it (a "
                                         "run too short for one takes a rate for the model's size)",
                                         "number", check=_positive, words=("auto",))
    weight_decay: float = setting(0.01, "Weight decay", "AdamW weight decay", "number", check=_non_negative,
                                  advanced=True)
    warmup_steps: int = setting(0, "Warmup steps", "steps of linear warmup", "integer", check=_at_least(0),
                                advanced=True)
    epochs: float = setting(3.0, "Epochs", "passes over the training chunks (or give max steps)", "number",
                            check=_positive, on_resume=True)
    max_steps: int | None = setting(None, "Max steps", "optimizer steps; overrides epochs", "integer",
                                    check=_at_least(1), on_resume=True, blank="from epochs")
    train_size: int | None = setting(None, "Train chunks", "chunks to train on (down-sampled, seeded)",
                                     "integer", check=_at_least(1), blank="all")
    test_size: int | None = setting(None, "Test chunks", "test chunks for perplexity", "integer",
                                    check=_at_least(1), auto=_by_device(1000, 200))
    general: str | None = setting(None, "General text", "corpus whose perplexity before and after shows what "
                                  "the run cost on general text", "path", advanced=True,
                                  blank="the shipped general-English sample")
    no_general: bool = setting(False, "Skip general text", "do not measure perplexity on general text",
                               "flag", advanced=True)
    seed: int = setting(42, "Seed", "seed of the data order, the masks and the held-out split", "integer",
                        check=_seed, advanced=True)
    device: str = setting("auto", "Device", "where to train", "choice", choices=("auto", "cpu", "cuda"),
                          advanced=True, on_resume=True)
    precision: str = setting("auto", "Precision", "auto: bf16 on CUDA (else fp16) and on CPUs with native "
                             "bf16, else fp32", "choice", choices=("auto", "fp32", "bf16", "fp16"),
                             advanced=True)
    gradient_accumulation: int = setting(1, "Accumulation", "micro-batches per optimizer step", "integer",
                                         check=_at_least(1), advanced=True)
    eval_steps: int | None = setting(None, "Eval steps", "measure perplexity every N steps", "integer",
                                     check=_at_least(1), advanced=True, on_resume=True,
                                     blank="before and after only")
    save_steps: int | None = setting(None, "Save steps", "checkpoint every N steps", "integer",
                                     check=_at_least(1), advanced=True, on_resume=True,
                                     blank="min(500, steps)")
    keep_checkpoints: int = setting(1, "Checkpoints", "checkpoints kept on disk: the latest N and the best "
                                    "by eval perplexity (each holds the model and its optimizer state, about "
                                    "3 times the model); 0: none once the run completes, as run_mlm.py's "
                                    "save_total_limit", "integer", check=_at_least(0), advanced=True,
                                    on_resume=True)
    logging_steps: int | None = setting(None, "Logging steps", "log the loss every N steps (by default a "
                                        "thousandth of the steps, and steps 1, 2, 4, ... before it)",
                                        "integer",
                                        check=_at_least(1), advanced=True, on_resume=True,
                                        blank="steps / 1000")
    text_field: str = setting("text", "Text field", "the field of JSON, CSV or Parquet rows holding the text",
                              "text", advanced=True)
    subset: str | None = setting(None, "Subset", "the dataset's subset (load_dataset's name=, e.g. "
                                 "wikitext-103-raw-v1)", "text", advanced=True, blank="the default one")
    train_split: str | None = setting(None, "Train split", "the dataset split to train on", "text",
                                      advanced=True, blank="train")
    test_split: str | None = setting(None, "Test split", "the dataset split to measure perplexity on", "text",
                                     advanced=True, blank="test if there is one, else held out")
    streaming: bool = setting(False, "Streaming", "read the dataset as a stream, never whole (datasets of "
                              "any size)", "flag", advanced=True)
    processes: int = setting(1, "Processes", "training processes on this node, one per GPU (started through "
                             "accelerate launch, or torchrun on the CPU)", "integer", check=_at_least(1))
    nodes: int = setting(1, "Nodes", "machines taking part; run the same command on each, with its own "
                         "node rank", "integer", check=_at_least(1), advanced=True)
    node_rank: int = setting(0, "Node rank", "this machine's number among the nodes (0: the one that keeps "
                             "the run)", "integer", check=_at_least(0), advanced=True, on_resume=True)
    main_address: str | None = setting(None, "Main address", "host:port of node 0, with several nodes",
                                       "text", advanced=True, on_resume=True, blank="this machine")
    report_to: str = setting("none", "Report to", "a tracker that also gets the metrics and settings "
                             "(Accelerate's log_with)", "choice",
                             choices=("none", "tensorboard", "trackio", "wandb", "mlflow"), advanced=True,
                             on_resume=True)
    freeze_embeddings: bool = setting(False, "Freeze embeddings", "keep the word embeddings fixed", "flag",
                                      advanced=True)
    # vocabulary extension (issue 24, `vocab_extend`): data-changing, so refused on resume like the others
    extend_vocab: int = setting(0, "Extend vocab.", "add the N words most in need of adapting (count x extra "
                                "pieces in the training split) as whole tokens before training", "integer",
                                check=_at_least(0), advanced=True)
    min_count: int = setting(5, "Min count", "with extend vocab.: only words seen this often in the training "
                             "split", "integer", check=_at_least(1), advanced=True)
    # bits per character before and after (`bpc`): the measure that compares runs across vocabularies
    bpc_chars: int = setting(2000, "BPC chars", "characters of the test split (local corpora only) "
                             "measured in bits per character before and after training, which compare "
                             "across vocabularies (an extended and a plain run); 0: not measured. Each "
                             "measurement costs a forward pass per token: 2000 characters took about 25 s "
                             "for starter on a shared 2-core CPU", "integer", check=_at_least(0),
                             advanced=True)
    allow_pickle: bool = setting(False, "Allow pickle", "allow pytorch_model.bin weights (pickles can run "
                                 "code: trusted sources only)", "flag", advanced=True, on_resume=True)

    def problems(self) -> list[FieldError]:
        """Every bad value, by field (the form marks them all; the CLI reports the first)."""
        found = [problem for f in fields(self) if (problem := _problem(f.name, getattr(self, f.name)))]
        named = {e.field for e in found}
        return found + [e for e in self._together() if e.field not in named]

    def _together(self) -> list[FieldError]:
        """Values that are fine alone and wrong together, found before a run exists rather than in it."""
        found = []
        if self.general is not None and self.no_general:
            found.append(FieldError("no_general", "{field}: {general} was also given; keep one of the two",
                                    also=("general",)))
        return found

    def validate(self) -> None:
        for problem in self.problems():
            raise problem

    def steps(self, train_chunks: int, batch_size: int, processes: int) -> tuple[int, int]:
        """(steps, steps per epoch) of this run on `train_chunks`: the trainer's plan and the form's notes
        count them by this one rule."""
        per_epoch = max(1, train_chunks // (batch_size * self.gradient_accumulation * processes))
        return self.max_steps or max(1, math.ceil(self.epochs * per_epoch)), per_epoch

    def on_device(self, name: str, device: str) -> Any:
        """A setting's value on a device: the value given, else its device default (batch and test size)."""
        value = getattr(self, name)
        auto = _setting(name).auto
        return auto(device) if value is None and auto is not None else value

    def resumed_with(self, changes: Mapping[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
        """This run's config with the settings a resume may change, and the changes that took effect.

        A setting that would change the data order or the masks is refused by name; one repeating the
        run's own value is accepted. Epochs and max steps replace each other, as on the command line.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        applied = {}
        for name, value in changes.items():
            if value == values[name] and not (name == "epochs" and values["max_steps"] is not None):
                continue
            if not _setting(name).on_resume:
                raise FieldError(name, RESUME_REFUSED)
            values[name] = applied[name] = value
            if name == "epochs" and "max_steps" not in changes:
                values["max_steps"] = None
        config = TrainConfig(**values)
        config.validate()
        return config, applied

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config a run recorded; a value of the wrong type (a hand-edited file) is refused by field."""
        values = {}
        for f, s in settings():
            if f.name not in data:
                if f.default is MISSING:
                    raise FieldError(f.name, "is missing")
                continue
            value = data[f.name]
            if not (value is None and f.default is None) and not _has_kind(value, s.kind) and \
                    value not in s.words:
                raise FieldError(f.name, f"is {value!r}, not {_kind_words(s)}")
            values[f.name] = value
        config = cls(**values)
        config.validate()
        return config


KIND_WORDS: dict[Kind, str] = {"text": "text", "path": "text", "integer": "a whole number",
                               "number": "a number", "choice": "text", "flag": "true or false"}


def _has_kind(value: Any, kind: Kind) -> bool:
    if kind == "flag":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float)
    return isinstance(value, str)


def _kind_words(s: Setting) -> str:
    return KIND_WORDS[s.kind] + "".join(f" or {word}" for word in s.words)


def _either(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def settings() -> Iterator[tuple[Field[Any], Setting]]:
    for f in fields(TrainConfig):
        yield f, f.metadata["setting"]


def _setting(name: str) -> Setting:
    return TrainConfig.__dataclass_fields__[name].metadata["setting"]


def _problem(name: str, value: Any) -> FieldError | None:
    """What is wrong with a setting's value by its declaration (its choices, its check), or None."""
    s = _setting(name)
    if value is None or s.kind == "flag" or value in s.words:
        return None
    if s.choices and value not in s.choices:
        return FieldError(name, f"must be {_either(s.choices)} (got {value})")
    if s.check is not None and (problem := s.check(value)) is not None:
        return FieldError(name, problem)
    return None


def check_value(name: str, value: Any) -> None:
    """Refuse a value of one setting as `TrainConfig` would, for an engine function that takes it alone
    (`chunking.check_chunk_size`)."""
    if (problem := _problem(name, value)) is not None:
        raise problem


# -- names of a setting, by face: how a `FieldError` is told (`FieldError.named`) --------------------------
def flag(name: str) -> str:
    """The command-line name of a setting (or of any option, by its dest name): `--chunk-size`, `CORPUS`."""
    f = TrainConfig.__dataclass_fields__.get(name)
    if f is not None and f.default is MISSING:
        return name.upper()  # a positional argument
    return "--" + name.replace("_", "-")


def label(name: str) -> str:
    """The workbench's name of a setting: its form label ("Mask prob."); an option the form does not show
    is named in words."""
    f = TrainConfig.__dataclass_fields__.get(name)
    return f.metadata["setting"].label if f is not None else in_words(name)


def changed_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that differ from their defaults (the corpus aside): what `runs show` and a model card
    list as a run's settings."""
    return {f.name: getattr(config, f.name) for f in fields(config)
            if f.default is not MISSING and getattr(config, f.name) != f.default}


def resumable() -> list[str]:
    """The settings `--resume` applies (and records); the others are refused there."""
    return [f.name for f, s in settings() if s.on_resume]


# -- the command line -----------------------------------------------------------------------------------
def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


METAVAR: dict[Kind, str] = {"integer": "N", "number": "X", "text": "TEXT", "path": "PATH"}
PARSE: dict[Kind, Callable[[str], Any]] = {"integer": _parse_int, "number": _parse_float, "text": str,
                                           "path": str, "choice": str}


def _parser(s: Setting) -> Callable[[str], Any]:
    """The parser of a setting's text: its kind's, and its words (`auto`) besides."""
    if not s.words:
        return PARSE[s.kind]

    def parse(text: str) -> Any:
        if text.strip().lower() in s.words:
            return text.strip().lower()
        try:
            return PARSE[s.kind](text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"not {_kind_words(s)}: {text!r}") from None

    return parse


def _add_argument(parser: Any, f: Field[Any], s: Setting, *, required: bool = False) -> None:
    """A setting's argument, default SUPPRESS: what the user gave is exactly what lands in the namespace.
    A positional one (the corpus) is `required`, or optional where another flag may stand for it."""
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS}
    if f.default is MISSING:
        parser.add_argument(f.name, nargs=None if required else "?", help=s.help, **kwargs)
        return
    kwargs["dest"] = f.name
    note = s.blank or ("suits the device" if s.auto else f"{f.default}")
    if s.kind == "flag":
        parser.add_argument(flag(f.name), action="store_const", const=True, help=s.help, **kwargs)
    else:
        metavar = "|".join((METAVAR[s.kind], *s.words)) if s.kind in METAVAR else None
        parser.add_argument(flag(f.name), type=_parser(s), choices=s.choices or None, metavar=metavar,
                            help=f"{s.help} (default: {note})", **kwargs)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per setting. Their defaults come from `TrainConfig`, and `--resume` can refuse a flag
    that was given."""
    steps = parser.add_mutually_exclusive_group()
    for f, s in settings():
        _add_argument(steps if f.name in ("epochs", "max_steps") else parser, f, s)


# The settings that other commands share with `train`, under the same flags, help and checks, so that a
# command that reads a corpus or opens a model takes them as a run does (see `add_setting_arguments`).
CORPUS_SETTINGS = ("corpus", "text_field", "subset", "train_split", "test_split", "streaming")
MODEL_SETTINGS = ("model", "allow_pickle")


def add_setting_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """The arguments of some settings, for a command other than `train` (`chunks`, `eval`, `vocab`);
    `complete_settings` gives them their defaults and checks them once parsed."""
    for name in names:
        _add_argument(parser, TrainConfig.__dataclass_fields__[name], _setting(name), required=True)
    parser.set_defaults(command_settings=names)


def complete_settings(args: argparse.Namespace) -> None:
    """Give the settings of a command (`add_setting_arguments`) the defaults `TrainConfig` declares where
    the command line left them out, and refuse a bad value by its setting, as `train` does.

    The defaults are set here, not by argparse, so that `mlm-tui --model X chunks ...` keeps the top-level
    value, which a subcommand's own default would overwrite.
    """
    for name in getattr(args, "command_settings", ()):
        value = getattr(args, name, None)
        if value is None:  # a positional setting is required: only options are ever left out
            setattr(args, name, TrainConfig.__dataclass_fields__[name].default)
        else:
            check_value(name, value)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (`--model` before the subcommand counts too)."""
    return {f.name: getattr(args, f.name) for f, _ in settings() if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return config_from_given(given_settings(args))


def config_from_given(given: Mapping[str, Any]) -> TrainConfig:
    """The config of the settings given on a command line, the others at their defaults; checked."""
    if "corpus" not in given:
        raise FieldError("corpus", "give a {field} (or --resume RUN_ID)")
    config = TrainConfig(**given)
    config.validate()
    return config


def train_argv(config: TrainConfig) -> list[str]:
    """The `mlm-tui train` arguments for a config: the settings that differ from the defaults.

    Values travel as `--flag=value` and the corpus after `--`, so no value (a corpus named `-notes.txt`,
    a text field `--resume=x`) can ever be read as an option.
    """
    args = ["train"]
    for f, s in settings():
        value = getattr(config, f.name)
        if f.default is MISSING or value is None or value == f.default:
            continue
        if f.name == "epochs" and config.max_steps is not None:
            continue  # the CLI takes one of --epochs and --max-steps
        args.append(flag(f.name) if s.kind == "flag" else f"{flag(f.name)}={value}")
    return [*args, "--", config.corpus]


# -- the form -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """One input of the Train form."""

    name: str
    label: str
    kind: Kind
    help: str
    default: str  # the text the box starts with ("" for a blank that the trainer fills)
    choices: tuple[str, ...]
    advanced: bool

    def placeholder(self, device: str | None = None) -> str:
        """What a blank box means; with the device known, the device default ("auto: 16 on cpu")."""
        s = _setting(self.name)
        if s.auto is not None:
            return f"auto: {s.auto(device)} on {device}" if device else "auto"
        return s.blank


def form_fields() -> list[FormField]:
    out = []
    for f, s in settings():
        default = "" if f.default in (MISSING, None) else f.default
        if s.kind == "flag":
            default = bool(default)
        out.append(FormField(f.name, s.label, s.kind, s.help, default if s.kind == "flag" else str(default),
                             s.choices, s.advanced))
    return out


def config_from_form(values: Mapping[str, str | bool]) -> tuple[TrainConfig | None, dict[str, str]]:
    """The form's strings as a config, or the problems by field, each worded with its label."""
    parsed: dict[str, Any] = {}
    errors: dict[str, FieldError] = {}
    for f, s in settings():
        raw = values.get(f.name)
        if s.kind == "flag":
            parsed[f.name] = bool(raw)
            continue
        text = str(raw or "").strip()
        if not text:
            if f.default is MISSING:
                errors[f.name] = FieldError(f.name, "{field}: give a corpus file, folder or hub dataset")
            continue  # the default (None: the trainer chooses)
        try:
            parsed[f.name] = _parser(s)(text)
        except argparse.ArgumentTypeError as exc:
            errors[f.name] = FieldError(f.name, f"{{field}}: {exc}")
    # Every value that parsed is checked too, so the form marks all its problems at once.
    checked = TrainConfig(**{"corpus": "", **parsed})
    errors.update({e.field: e for e in checked.problems() if e.field not in errors})
    if errors:
        return None, {name: e.named(label) for name, e in errors.items()}
    return checked, {}


# -- what the defaults resolved to ----------------------------------------------------------------------
@dataclass
class Plan:
    """What the defaults resolved to on this machine; printed before training so nothing is hidden."""

    device: str
    precision: str
    batch_size: int
    steps: int
    steps_per_epoch: int
    train_chunks: int
    test_chunks: int
    logging_steps: int
    save_steps: int
    eval_steps: int | None
    processes: int = 1
    notes: list[str] = field(default_factory=list)
    early_logs: bool = False  # the interval is the default: steps 1, 2, 4, ... log before its first

    def logs_at(self, step: int) -> bool:
        """Whether the run logs its loss after step `step` (from 1): every `logging_steps`, at the last step,
        and, where the interval was not given, at steps 1, 2, 4, ... before the first: at a thousandth of a
        million steps the chart's first point would otherwise wait for step 1,000."""
        return (step % self.logging_steps == 0 or step == self.steps
                or (self.early_logs and step < self.logging_steps and step & (step - 1) == 0))

    @classmethod
    def from_record(cls, data: Any) -> Plan | None:
        """The plan a run recorded, or None when it has none yet (or one no longer readable)."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None
