"""The headless `mlm-tui` command: the engine for scripts, GPU servers and the workbench's own runs.

Every subcommand takes `--json`: stdout is then exactly one JSON document (the error too, as
`{"error": ...}`), while progress goes to stderr. Mistakes get one line and exit 2 (usage) or 1 (other
failures); Ctrl+C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NoReturn

from mlm_tui import atomic
from mlm_tui.errors import FieldError, MlmError, UsageError, first_line, told
from mlm_tui.fill import TOP_K
from mlm_tui.progress import format_bytes, format_duration, format_figure, print_event, say
from mlm_tui.run_settings import (
    CORPUS_SETTINGS,
    MODEL_SETTINGS,
    add_setting_arguments,
    add_train_arguments,
    complete_settings,
    config_from_args,
    flag,
    given_settings,
    resumable,
    train_argv,
)
from mlm_tui.textsafe import printable, shell_quote


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _workbench_parser() -> argparse.ArgumentParser:
    """`mlm-tui`'s own options, before any command; with no command they open the workbench."""
    parser = _Parser(prog="mlm-tui", description="Masked-LM domain adaptation workbench. With no command: "
                     "open the workbench.")
    parser.add_argument("--model", help="model: directory, run id, starter or hub id (default: starter)")
    parser.add_argument("--data", help="corpus to open in the Chunks pane")
    parser.add_argument("--text-field", help="the corpus column that holds the text (default: text)")
    parser.add_argument("--version", action="version", version=_version())
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The arguments. A start of the workbench (no command) reads them with its own options only: the
    whole tree of commands takes 15 ms to build, 5% of the workbench's first paint. Anything else, a
    mistyped option or command and `--help` included, goes to the whole parser, which says what is wrong
    and lists the commands."""
    if not {"-h", "--help"} & set(argv):
        args, rest = _workbench_parser().parse_known_args(argv)
        if not rest:
            args.command = None
            return args
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = _workbench_parser()
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            add_setting_arguments(p, MODEL_SETTINGS)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    p = sub.add_parser("fill", help="top-k fills for every [MASK] in TEXT")
    p.add_argument("text")
    p.add_argument("--top-k", type=_positive_int, default=TOP_K, help=f"fills per mask (default: {TOP_K})")
    common(p)

    p = sub.add_parser("chunks", help="tokenize a corpus and cut it into chunks; print the counts")
    add_setting_arguments(p, (*CORPUS_SETTINGS, "chunk_size", *MODEL_SETTINGS))
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N chunks decoded")
    common(p, model=False)

    p = sub.add_parser("train", help="fine-tune a model on a corpus (a run in the run store)")
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted, cancelled or failed run; "
                   f"only {', '.join(flag(n) for n in resumable())} may change")
    p.add_argument("--accept-changed-corpus", action="store_true",
                   help="with --resume: continue although the corpus changed since the run read it")
    p.add_argument("--run-id", help=argparse.SUPPRESS)  # chosen by a launcher (see lifecycle.launch)
    common(p, model=False)

    p = sub.add_parser("lr-find", help="the learning-rate range test alone: the rate that --learning-rate "
                       "auto would pick for a run with these settings")
    add_train_arguments(p)
    common(p, model=False)

    p = sub.add_parser("runs", help="list the runs in the run store; show, delete, export or push one, or "
                       "what it learned")
    common(p, model=False)
    def json_flag(q: argparse.ArgumentParser) -> None:
        # SUPPRESS: `mlm-tui runs --json show ID` keeps the flag given before the run command
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON document")

    def probe_options(q: argparse.ArgumentParser) -> None:
        from mlm_tui import probe

        q.add_argument("--label-field", required=True, metavar="L", help="the column that holds the class")
        q.add_argument("--max-train", type=_positive_int, default=probe.DEFAULT_MAX_TRAIN, metavar="N",
                       help="train the probe on at most N examples, a stratified sample (default: "
                       f"{probe.DEFAULT_MAX_TRAIN})")
        q.add_argument("--max-test", type=_positive_int, default=probe.DEFAULT_MAX_TEST, metavar="N",
                       help="test it on at most N examples, a stratified sample (default: "
                       f"{probe.DEFAULT_MAX_TEST})")
        q.add_argument("--method", choices=probe.METHODS, default="linear",
                       help="linear: a logistic regression on frozen features (default, quick); finetune: a "
                       "classification head on each model, every weight trained --steps steps")
        q.add_argument("--steps", type=_positive_int, metavar="N",
                       help=f"with --method finetune: training steps of {probe.FINETUNE_BATCH_SIZE} texts "
                       f"(default: {probe.STEPS})")
        q.add_argument("--learning-rate", type=float, metavar="R",
                       help="with --method finetune: AdamW's peak learning rate (default: "
                       f"{probe.FINETUNE_LEARNING_RATE:g})")

    runs = p.add_subparsers(dest="runs_command", parser_class=_Parser,
                            metavar="{show,delete,learned,export,push,probe}")
    q = runs.add_parser("show", help="one run: settings, metrics, checkpoints, disk use, model path")
    q.add_argument("run_id", metavar="RUN_ID")
    json_flag(q)
    q = runs.add_parser("delete", help="delete a run (not a live one), or only its checkpoints")
    q.add_argument("run_id", metavar="RUN_ID")
    q.add_argument("--checkpoints-only", action="store_true", help="keep the run and its final model")
    json_flag(q)
    q = runs.add_parser("learned", help="what a run learned: the domain's words that got easier or harder "
                        "to fill in on its test split, and fills before and after on its own test text")
    q.add_argument("run_id", metavar="RUN_ID")
    q.add_argument("--top", type=_positive_int, default=30, help="words to list each way")
    q.add_argument("--min-count", type=_positive_int, default=5,
                   help="call a word easier or harder only on this many occurrences in the test split")
    q.add_argument("--per-word", type=_positive_int, help="occurrences measured per word, at most (20)")
    q.add_argument("--words", type=_positive_int,
                   help="the vocabulary view's words measured, most in need of adapting first (200)")
    q.add_argument("--all", action="store_true",
                   help="list punctuation, markup and general words with the others, not apart")
    json_flag(q)
    q = runs.add_parser("export", help="copy a run's final model (weights, tokenizer, card) to a folder")
    q.add_argument("run_id", metavar="RUN_ID")
    q.add_argument("dest", metavar="DIR", help="a new or empty folder")
    json_flag(q)
    q = runs.add_parser("push", help="upload a run's final model to a model repository on the Hub")
    q.add_argument("run_id", metavar="RUN_ID")
    q.add_argument("repo_id", metavar="REPO_ID", help="user/name (created if it does not exist)")
    q.add_argument("--private", action="store_true", help="create the repository private")
    json_flag(q)
    q = runs.add_parser("probe", help="did the run help a task? a probe of its base model against its final "
                        "model on a labelled corpus (default: the run's own)")
    q.add_argument("run_id", metavar="RUN_ID")
    q.add_argument("corpus", nargs="?", metavar="CORPUS", help="a labelled corpus (default: the run's)")
    q.add_argument("--text-field", help="the column that holds the text (default: the run's)")
    probe_options(q)
    json_flag(q)

    p = sub.add_parser("eval", help="masked-LM perplexity of a model on a corpus (fixed-seed masking)")
    add_setting_arguments(p, (*CORPUS_SETTINGS, "chunk_size", *MODEL_SETTINGS, "bpc_chars"))
    p.add_argument("--test-size", type=_positive_int, help="evaluate on this many chunks (seeded sample)")
    p.add_argument("--bpc", action="store_true", help="bits per character by PLL-word-l2r on the test "
                   "documents instead, the first --bpc-chars of them, as a run measures them: compares "
                   "models of different vocabularies")
    common(p, model=False)

    p = sub.add_parser("vocab", help="how the tokenizer cuts a corpus into words and pieces, beside "
                       "general English")
    add_setting_arguments(p, (*CORPUS_SETTINGS, "model"))
    p.add_argument("--top", type=_positive_int, default=50, help="words to list, most in need of adapting")
    p.add_argument("--min-count", type=_positive_int, default=5, help="rank only words seen this often")
    p.add_argument("--extend", type=_positive_int, metavar="N", help="show the N words that train "
                   "--extend-vocab N would add (ranked on the training split only) and how")
    common(p, model=False)

    p = sub.add_parser("probe", help="does a model help a task? a linear or fine-tune probe on a labelled "
                       "corpus; two --model: their paired difference")
    # not --streaming: the probe reads its data whole
    add_setting_arguments(p, ("corpus", "text_field", "subset", "train_split", "test_split"))
    p.set_defaults(streaming=False)
    p.add_argument("--model", action="append", dest="models", metavar="REF",
                   help="directory, run id, starter or hub id; give it twice to compare (default: starter)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pytorch_model.bin weights")
    probe_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def _version() -> str:
    from mlm_tui import __version__

    return f"mlm-tui {__version__}"


# -- output ---------------------------------------------------------------------------------------------
def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(atomic.dumps(data))
    else:
        print(text)


# -- commands -------------------------------------------------------------------------------------------
def cmd_fill(args: argparse.Namespace) -> None:
    from mlm_tui.models import load_model, require_mask

    require_mask(args.text, args.model)
    handle = load_model(args.model, allow_pickle=args.allow_pickle)
    result = handle.fill(args.text, top_k=args.top_k)
    _emit(args, result.to_dict(), result.as_text())


def _hub(args: argparse.Namespace) -> Any:
    from mlm_tui.corpus import HubOptions

    return HubOptions.of(args)


def _tokenizer_and_splits(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from mlm_tui.chunking import check_chunk_size, open_tokenizer, tokenize_corpus

    tokenizer = open_tokenizer(args.model)
    check_chunk_size(args.chunk_size, tokenizer)
    splits = tokenize_corpus(args.corpus, tokenizer, args.text_field, status=say if not args.json else None,
                             hub=_hub(args))
    return tokenizer, splits


def cmd_chunks(args: argparse.Namespace) -> None:
    if args.show < 0:
        raise FieldError("show", f"must be zero or more (got {args.show})")
    tokenizer, splits = _tokenizer_and_splits(args)
    stats = {name: s.stats(args.chunk_size) for name, s in splits.items()}
    data: dict[str, Any] = {"corpus": args.corpus, "chunk_size": args.chunk_size, "splits": stats}
    lines = [f"{printable(args.corpus)}, chunks of {args.chunk_size} tokens"]
    for name, s in stats.items():
        lines.append(f"  {name:<12} {s['documents']:>9,} documents {s['tokens']:>12,} tokens "
                     f"{s['chunks']:>10,} chunks {s['dropped_tokens']:>5} dropped")
    if args.show:
        from mlm_tui.chunking import decode

        first = next(iter(splits.values())).chunks(args.chunk_size)[: args.show]
        examples = [decode(tokenizer, [int(t) for t in chunk]) for chunk in first]
        data["examples"] = examples
        lines += [f"\n--- chunk {i} ---\n{printable(text)}" for i, text in enumerate(examples, 1)]
    _emit(args, data, "\n".join(lines))


def cmd_eval(args: argparse.Namespace) -> None:
    from mlm_tui.evaluate import eval_corpus

    if args.bpc:
        _eval_bpc(args)
        return

    result = eval_corpus(args.corpus, args.model, args.chunk_size, args.text_field, args.test_size,
                         args.allow_pickle, hub=_hub(args))
    _emit(args, result, f"perplexity {result['perplexity']:.2f} on {result['chunks']} chunks "
          f"({result['masked_tokens']} masked tokens)")


def _eval_bpc(args: argparse.Namespace) -> None:
    """`eval --bpc`: the same characters for any model, so a base and a vocabulary-extended run compare."""
    from mlm_tui.bpc import HUB_REFUSED, local_corpus, measured_texts, pll_bits
    from mlm_tui.models import load_model

    if not local_corpus(args.corpus, _hub(args)):
        raise UsageError(f"--bpc: {HUB_REFUSED}")
    if not args.bpc_chars:
        raise FieldError("bpc_chars", "{field} 0 measures nothing: give 1 or more characters")
    texts = measured_texts(args.corpus, args.text_field, max_chars=args.bpc_chars)
    handle = load_model(args.model, allow_pickle=args.allow_pickle)
    if not args.json:
        say(f"measuring {sum(map(len, texts)):,} characters of test text, one masked copy per token")
    result = pll_bits(handle.model, handle.tokenizer, texts, window=args.chunk_size)
    _emit(args, result.to_dict(), f"{result.bpc:.4f} bits per character ({result.bits_per_word:.2f} per "
          f"word) on {result.characters:,} characters, {result.tokens:,} tokens")


def _change(before: float | None, after: float | None, digits: int = 2) -> str:
    """`31.28 -> 27.22 (-13.0%)`, with what is known so far (bits per character: 3 `digits`)."""
    change = f" ({(after / before - 1) * 100:+.1f}%)" if before and after is not None else ""
    return f"{format_figure(before, digits)} -> {format_figure(after, digits)}{change}"


def cmd_runs(args: argparse.Namespace) -> None:
    commands = {None: cmd_runs_list, "show": cmd_runs_show, "delete": cmd_runs_delete,
                "learned": cmd_runs_learned, "export": cmd_runs_export, "push": cmd_runs_push,
                "probe": cmd_runs_probe}
    commands[args.runs_command](args)


def cmd_runs_list(args: argparse.Namespace) -> None:
    """List runs, newest first; with --json: `{"runs": [summary, ...], "total_bytes": n}` (see
    `runstore.RunInfo.summary`). Runs whose files cannot be read get one line each on stderr, left out."""
    from mlm_tui.runstore import list_infos

    infos, problems = list_infos()
    for line in problems:
        say(line)
    total = sum(i.bytes for i in infos)
    lines = [f"{'run':<21} {'status':<11} {'steps':>11} {'ppl before':>10} {'after':>8} {'disk':>9}  "
             "model / corpus"]
    for i in infos:
        steps = f"{i.step}/{i.total_steps}" if i.total_steps else str(i.step)
        lines.append(f"{i.run_id:<21} {i.status:<11} {steps:>11} {format_figure(i.perplexity_before):>10} "
                     f"{format_figure(i.perplexity_after):>8} {format_bytes(i.bytes):>9}  "
                     f"{printable(str(i.model))} / {printable(str(i.corpus))}")
    lines.append(f"{len(infos)} runs, {format_bytes(total)}")
    _emit(args, {"runs": [i.summary() for i in infos], "total_bytes": total},
          "\n".join(lines) if infos else "no runs yet")


def _run_of(ref: str, stubs: bool = False) -> Any:
    from mlm_tui.runstore import find_run

    run = find_run(ref, stubs)
    if run is None:
        raise UsageError(f"no run called {ref!r} (see: mlm-tui runs)")
    return run


def cmd_runs_show(args: argparse.Namespace) -> None:
    from mlm_tui.rundata import general_name

    run = _run_of(args.run_id)
    info = run.info()
    lines = [f"run        {info.run_id} ({info.status})"]
    if info.message:
        lines.append(f"message    {info.message_for(flag)}")
    lines.append(f"model      {info.model}")
    lines.append(f"corpus     {info.corpus} (text field {info.text_field!r})")
    took = f", {format_duration(info.duration)} so far" if info.status in ("preparing", "running") else (
        f", took {format_duration(info.duration)}" if info.duration is not None else "")
    lines.append(f"created    {info.created}{took}")
    if info.status == "preparing" and info.tokenize_done is not None:
        of = f" of {format_bytes(info.tokenize_total)}" if info.tokenize_total else ""
        lines.append(f"tokenizing {format_bytes(info.tokenize_done)}{of} read")
    steps = f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step)
    speed = f", {info.tokens_per_s:,.0f} tok/s" if info.tokens_per_s else ""
    loss = f", loss {info.loss:.4f}" if info.loss is not None else ""
    lines.append(f"steps      {steps}{loss}{speed}")
    best = f", best checkpoint {info.best_perplexity:.2f}" if info.best_perplexity is not None else ""
    lines.append(f"perplexity {_change(info.perplexity_before, info.perplexity_after)}{best}")
    general = general_name(info.config) if info.config is not None else None
    if general is not None or info.general_perplexity_before is not None:
        on = f" on {general}" if general is not None else ""
        change = _change(info.general_perplexity_before, info.general_perplexity_after)
        lines.append(f"general    {change}{on}")
    if info.bpc_before is not None or info.bpc_after is not None:
        lines.append(f"bits/char  {_change(info.bpc_before, info.bpc_after, 3)} on "
                     f"{info.bpc_characters or 0:,} characters of the test split (base model, its own "
                     "tokenizer -> the run's)")
    if info.learned is not None:
        lines.append(f"learned    {info.learned['summary']['text']} ({info.learned.get('model')}, "
                     f"{info.learned.get('measured')}; see: runs learned)")
    marks = [f"{s}{' (best)' if s == info.best_checkpoint else ''}" for s in info.checkpoints]
    lines.append(f"checkpoints {', '.join(marks) if marks else 'none'}")
    lines.append(f"model path {info.model_path or 'none yet'}")
    lines.append(f"disk       {format_bytes(info.bytes)}")
    if info.config is not None:
        changed = [shell_quote(arg) for arg in train_argv(info.config)[1:-2]]  # as `train` takes them back
        lines.append(f"settings   {printable(' '.join(changed)) if changed else 'defaults'}")
    elif info.config_problem:
        lines.append(f"settings   unreadable: {info.config_problem}")
    if info.learning_rate is not None:
        lines.append(f"learn rate {info.learning_rate:.2e}, {info.learning_rate_reason}")
    if words := info.vocab_words:  # see vocab_extend: `--extend-vocab N`
        shown = ", ".join(words[:10]) + (f" and {len(words) - 10} more" if len(words) > 10 else "")
        lines.append(f"vocabulary +{len(words)} words ({info.vocab_how}): {shown}")
    if info.plan is not None:
        p = info.plan
        lines.append(f"plan       {p.device} ({p.precision}), batch {p.batch_size} x {p.processes} "
                     f"process(es), {p.train_chunks} train / {p.test_chunks} test chunks")
    for r in info.resumes:
        what = ", ".join(f"{k} {v}" for k, v in (r.get("changes") or {}).items()) or "no changes"
        corpus = "; corpus changed" if r.get("corpus_changed") else ""
        lines.append(f"resumed    {r.get('at')}: {what}{corpus}")
    data = info.to_dict()
    if isinstance(extension := run.config().get("vocab_extension"), dict):  # each word's counts and pieces
        data["vocab_extension"] = extension
    _emit(args, data, "\n".join(printable(line) for line in lines))


def cmd_runs_delete(args: argparse.Namespace) -> None:
    from mlm_tui.runstore import delete_run

    done = delete_run(_run_of(args.run_id, stubs=True), checkpoints_only=args.checkpoints_only)
    what = "the checkpoints of run" if done.checkpoints_only else "run"
    lines = [f"deleted {what} {done.run_id} ({format_bytes(done.freed_bytes)} freed)"]
    if done.named_by:
        lines.append(f"note: started from its model (their own checkpoints and models are kept): "
                     f"{', '.join(done.named_by)}")
    _emit(args, asdict(done), "\n".join(lines))


def cmd_runs_learned(args: argparse.Namespace) -> None:
    """The word test of the run's test split and probes, the summary first (`learned.report_lines`, which
    the workbench's view shows too); with --json: `learned.LearnedReport.to_dict()`."""
    from mlm_tui.learned import report_lines, run_learned

    given = {k: v for k, v in (("per_word", args.per_word), ("domain_words", args.words)) if v is not None}
    report = run_learned(args.run_id, top=args.top, min_count=args.min_count, mixed=args.all,
                         status=None if args.json else say, **given)
    _emit(args, report.to_dict(), "\n".join(report_lines(report)))


def cmd_runs_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mlm_tui.modelcard import export

    dest = export(_run_of(args.run_id), Path(args.dest).expanduser())
    _emit(args, {"run_id": args.run_id, "path": str(dest)},
          f"exported the final model of run {args.run_id} to {printable(str(dest))}")


def cmd_runs_push(args: argparse.Namespace) -> None:
    from mlm_tui.modelcard import push

    url = push(_run_of(args.run_id), args.repo_id, private=args.private)
    _emit(args, {"run_id": args.run_id, "repo_id": args.repo_id, "url": url},
          f"pushed the final model of run {args.run_id} to {printable(url)}")


def cmd_train(args: argparse.Namespace) -> None:
    stop = {"requested": False}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        say("stopping after this step (Ctrl+C again to abort at once)")

    # The first Ctrl+C (or SIGTERM) asks for a clean stop at the next step, which saves a checkpoint the
    # run can resume from; the handlers are put back afterwards so an in-process caller keeps its own.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _train(args, lambda: stop["requested"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args: argparse.Namespace, should_stop: Callable[[], bool]) -> None:
    from mlm_tui import lifecycle

    if args.resume and args.run_id:
        raise UsageError("--run-id starts a new run; it does not go with --resume")
    if args.accept_changed_corpus and not args.resume:
        raise UsageError("--accept-changed-corpus only applies with --resume")
    result = lifecycle.train(given_settings(args), resume=args.resume, run_id=args.run_id,
                             accept_changed_corpus=args.accept_changed_corpus, argv=args.raw_argv,
                             worker_flags=["--json"] if args.json else [], on_event=print_event,
                             should_stop=should_stop)
    if not result:
        return  # a launcher, or a secondary process of a launch: the launch's main process reports
    general = _change(result["general_perplexity_before"], result["general_perplexity_after"])
    bpc = _change(result["bpc_before"], result["bpc_after"], 3)
    _emit(args, result, f"run {result['run_id']} completed: perplexity {result['perplexity_before']:.2f} -> "
          f"{result['perplexity_after']:.2f} in {result['steps']} steps at learning rate "
          f"{result['learning_rate']:.2g} ({result['learning_rate_reason']})"
          f"{f'; general text {general}' if result['general_perplexity_after'] is not None else ''}"
          f"{f'; bits per character {bpc}' if result['bpc_after'] is not None else ''}; "
          f"model at {printable(result['model_path'])}")


def cmd_lr_find(args: argparse.Namespace) -> None:
    """The range test of a run with these settings, nothing trained or kept; with --json:
    `{"model", "suggested", "reason", "curve": [{"lr", "loss"}]}`."""
    from mlm_tui.training import FineTune

    if getattr(args, "corpus", None) is None:
        raise FieldError("corpus", "give a {field}: the range test runs on its first batches")
    if getattr(args, "learning_rate", None) is not None:
        raise FieldError("learning_rate", "{field} does not apply: lr-find finds the rate (it tries rates "
                         "from 1e-05 to 1e-01)")
    config = config_from_args(args)
    test = FineTune(config, on_event=print_event).find_rate()
    lines = [f"{'rate':>9}  loss", *(f"{p['lr']:9.2e}  {p['loss']:.4f}" for p in test.curve()),
             f"suggested learning rate {test.suggested:.2e}: {test.reason}"]
    _emit(args, {"model": config.model, "suggested": test.suggested, "reason": test.reason,
                 "curve": test.curve()}, "\n".join(lines))


def cmd_workbench(args: argparse.Namespace) -> None:
    from mlm_tui.app.main import run_app

    run_app(model=args.model, data=args.data, text_field=args.text_field or "text")


def cmd_vocab(args: argparse.Namespace) -> None:
    """Corpus figures beside the shipped general-English sample, then the words that most need adapting;
    with --json: `vocab.VocabReport.to_dict()`."""
    from mlm_tui.chunking import open_tokenizer
    from mlm_tui.vocab import REFERENCE_NAME, analyse_corpus

    report = analyse_corpus(args.corpus, open_tokenizer(args.model), args.model, args.text_field,
                            args.min_count, args.top, status=None if args.json else say, hub=_hub(args))
    f, ref = report.figures, report.reference
    lines = [f"{args.corpus}, tokenizer of {args.model}: {f.running_words:,} running words "
             f"({f.distinct_words:,} distinct), {f.tokens:,} tokens",
             f"{'':<24}{'corpus':>8}   general English: {REFERENCE_NAME}"]
    rows = [("fertility (tokens/word)", "fertility", "{:.2f}"),
            ("words in 2+ pieces", "split_2plus", "{:.1%}"), ("words in 3+ pieces", "split_3plus", "{:.1%}"),
            ("unknown tokens", "unknown_share", "{:.2%}")]
    for label, key, form in rows:
        other = form.format(getattr(ref, key)) if ref is not None else "-"
        lines.append(f"{label:<24}{form.format(getattr(f, key)):>8}   {other}")
    if report.top:
        lines.append(f"\nwords most in need of adapting, seen {args.min_count}+ times: need = count x "
                     "(pieces - 1)")
        lines.append(f"{'need':>9} {'count':>9}  {'word':<24} pieces")
        lines += [f"{w.need:>9,} {w.count:>9,}  {w.word:<24} {' '.join(w.pieces)}" for w in report.top]
    else:
        lines.append(f"\nno word seen {args.min_count}+ times is cut into pieces")
    data = report.to_dict()
    if args.extend:
        ext = _extension_preview(report, args)
        data["extend"] = ext.to_dict()
        lines.append(f"\n--extend-vocab {args.extend} would add {len(ext.words)} words as {ext.how} "
                     f"({len(ext.tokens)} new tokens), ranked on the training split:")
        lines += [f"{w.count:>9,}  {w.word:<24} {' '.join(w.pieces)}" for w in ext.words]
        if (short := ext.shortfall(args.min_count)) is not None:
            lines.append(short)
    _emit(args, data, "\n".join(lines))


def _extension_preview(report: Any, args: argparse.Namespace) -> Any:
    """What `train --extend-vocab N` would add: the same choice, on the training split a run with the
    default seed trains on, without touching any model."""
    from mlm_tui.chunking import backend_of
    from mlm_tui.run_settings import TrainConfig
    from mlm_tui.rundata import training_split
    from mlm_tui.vocab_extend import candidates, extend_backend

    train = training_split(report.counts.splits, TrainConfig.seed)
    tokenizer = report.counts.vocabulary.tokenizer
    if backend_of(tokenizer) is None:
        raise UsageError("--extend needs a fast tokenizer (tokenizer.json); this model has a slow one")
    return extend_backend(backend_of(tokenizer), candidates(train, tokenizer, args.min_count), args.extend)[1]


def _probe_method(args: argparse.Namespace) -> dict[str, Any]:
    """The probe's method and its training settings, refusing those without the fine-tune they set."""
    from mlm_tui import probe

    given = [flag(name) for name in ("steps", "learning_rate") if getattr(args, name) is not None]
    if given and args.method != "finetune":
        raise UsageError(f"{' and '.join(given)}: only the fine-tune probe trains; add --method finetune")
    rate = args.learning_rate
    return {"method": args.method, "steps": probe.STEPS if args.steps is None else args.steps,
            "learning_rate": probe.FINETUNE_LEARNING_RATE if rate is None else rate}


def _probe_progress(args: argparse.Namespace) -> Callable[[int, int, str], None] | None:
    """The probe's progress (texts through a model, training steps) on stderr, a line every 10 seconds at
    most (none with --json)."""
    import time

    if args.json:
        return None
    last = [time.monotonic()]

    def report(done: int, total: int, what: str) -> None:
        if done == total or time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            say(f"  {done:,}/{total:,} {what}")

    return report


def cmd_probe(args: argparse.Namespace) -> None:
    """A probe of each --model on a labelled corpus; with --json: `probe.ProbeReport.to_dict()`."""
    from mlm_tui.models import DEFAULT_MODEL
    from mlm_tui.probe import run_probe, summary_lines

    refs = args.models or [args.model or DEFAULT_MODEL]
    if len(refs) > len(set(refs)):
        raise UsageError("mlm-tui probe: the same --model twice; give two different models to compare")
    report = run_probe(args.corpus, args.label_field, [(r, r, r) for r in refs], **_probe_method(args),
                       text_field=args.text_field, hub=_hub(args), max_train=args.max_train,
                       max_test=args.max_test, allow_pickle=args.allow_pickle,
                       status=None if args.json else say, progress=_probe_progress(args))
    _emit(args, report.to_dict(), "\n".join(printable(line) for line in summary_lines(report)))


def cmd_runs_probe(args: argparse.Namespace) -> None:
    """The run's base model against its final model; with --json: `probe.ProbeReport.to_dict()`."""
    from mlm_tui.probe import probe_run, summary_lines

    report = probe_run(args.run_id, args.label_field, args.corpus, text_field=args.text_field,
                       **_probe_method(args), max_train=args.max_train, max_test=args.max_test,
                       status=None if args.json else say, progress=_probe_progress(args))
    _emit(args, report.to_dict(), "\n".join(printable(line) for line in summary_lines(report)))


COMMANDS = {"fill": cmd_fill, "chunks": cmd_chunks, "train": cmd_train, "runs": cmd_runs, "eval": cmd_eval,
            "vocab": cmd_vocab, "lr-find": cmd_lr_find,
            "probe": cmd_probe}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The secondary processes of a launch say what went wrong on stderr; stdout's one document is the main's.
    want_json = "--json" in argv and os.environ.get("RANK", "0") == "0"
    _fill_closed_std_streams()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        args = parse_args(argv)
        args.raw_argv = argv  # what a multi-process launch passes on to each process
        complete_settings(args)  # train reads its defaults from TrainConfig, and must see what was given
        from mlm_tui.home import configure_hf_environment

        configure_hf_environment()
        if args.command in COMMANDS:
            # SIGTERM unwinds like Ctrl+C, so that what cleans up after an interrupt (the token cache's
            # temporary file, a half-written state file) runs for it too; `train` sets its own handler.
            signal.signal(signal.SIGTERM, _terminate)
        COMMANDS.get(args.command, cmd_workbench)(args)
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        return _closed_stdout()
    except MlmError as exc:
        if _launcher_reports(exc):
            return exc.exit_code
        return _fail(_message(exc), exc.exit_code, want_json)
    except Terminated:
        return _fail("terminated", 143, want_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, want_json)
    except Exception as exc:
        # A bug or an environment failure we did not foresee (a full disk while saving the final model, a
        # library error): still one line, as promised; MLM_TUI_DEBUG=1 shows the traceback.
        if os.environ.get("MLM_TUI_DEBUG"):
            raise
        if _launcher_reports(exc):
            return 1
        return _fail(f"{type(exc).__name__}: {first_line(exc)[:200]}", 1, want_json)
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that cleanup on the way out runs as for Ctrl+C."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _message(exc: BaseException) -> str:
    """An error as the CLI says it: a bad setting is named by its flag."""
    return told(exc, flag)


def _launcher_reports(exc: Exception) -> bool:
    """In a worker of a multi-process launch, how the run ended is said once, by the launcher, from the
    run's record (see `launcher.run_launch`): the main worker stays quiet, and so does every worker when
    the run was cancelled. Another worker's own failure is its own line: nothing else records it.

    A worker that ends this way also lets the SIGTERM the launch's agent sends the survivors of a failure
    end it by the default action, quietly, instead of as a traceback (the run is recorded by now)."""
    from mlm_tui.errors import RunCancelled
    from mlm_tui.launcher import LAUNCHED_ENV

    if not os.environ.get(LAUNCHED_ENV):
        return False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return os.environ.get("RANK", "0") == "0" or isinstance(exc, RunCancelled)


def _fail(message: str, code: int, want_json: bool) -> int:
    try:
        say(f"error: {message}" if code not in (130, 143) else message)
        if want_json:
            print(json.dumps({"error": message}), flush=True)
    except BrokenPipeError:
        return _closed_stdout()
    return code


def _fill_closed_std_streams() -> None:
    """Started with stdout or stderr closed (`mlm-tui runs >&-`): write them to /dev/null, quietly.

    Python leaves such a stream as None, which print() ignores but a flush does not; and the next file
    the process opens would get the free descriptor, so a stray write to "stdout" would land in a run's
    state file. /dev/null takes the descriptor first.
    """
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - the process's stream until it exits


def _closed_stdout() -> int:
    """The reader went away (`mlm-tui runs --json | head -c 10`): exit quietly, as Unix tools do.

    Python would otherwise report the failed flush of stdout at exit; pointing stdout at /dev/null first
    makes that flush harmless.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 1  # what Python itself exits with on EPIPE


if __name__ == "__main__":
    sys.exit(main())
