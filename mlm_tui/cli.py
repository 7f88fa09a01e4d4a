"""The headless `mlm-tui` command: the engine for scripts, GPU servers and the workbench's own runs.

Every subcommand takes `--json`: stdout is then exactly one JSON document (the error too, as
`{"error": ...}`), while progress goes to stderr. Mistakes get one line and exit 2 (usage) or 1 (other
failures); Ctrl+C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from mlm_tui.errors import MlmError, UsageError, first_line


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


def _float(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "positive"
        raise argparse.ArgumentTypeError(f"must be {bound} (got {text})")
    return value


def _positive_float(text: str) -> float:
    return _float(text, allow_zero=False)


def _non_negative_float(text: str) -> float:
    return _float(text, allow_zero=True)


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (got {text})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlm-tui", description="Masked-LM domain adaptation workbench. With no command: "
                     "open the workbench.")
    parser.add_argument("--model", default="starter", help="model: directory, run id, starter or hub id")
    parser.add_argument("--data", help="corpus to open in the Chunks pane")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        if model:
            # SUPPRESS: `mlm-tui --model X fill ...` keeps the top-level value instead of this default.
            p.add_argument("--model", default=argparse.SUPPRESS, help="directory, run id, starter or hub id")
            p.add_argument("--allow-pickle", action="store_true",
                           help="allow pytorch_model.bin weights (pickles can run code: trusted sources "
                           "only)")
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    p = sub.add_parser("fill", help="top-k fills for every [MASK] in TEXT")
    p.add_argument("text")
    p.add_argument("--top-k", type=_positive_int, default=5)
    common(p)

    p = sub.add_parser("chunks", help="tokenize a corpus and cut it into chunks; print the counts")
    p.add_argument("corpus")
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--text-field", default="text")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N chunks decoded")
    common(p)

    p = sub.add_parser("train", help="fine-tune a model on a corpus (a run in the run store)")
    p.add_argument("corpus", nargs="?")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted or cancelled run")
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--text-field", default="text")
    p.add_argument("--mlm-probability", type=_fraction, default=0.15)
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--learning-rate", type=_positive_float, default=2e-5)
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=0)
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=_positive_float, default=3.0)
    steps.add_argument("--max-steps", type=_positive_int)
    p.add_argument("--train-size", type=_positive_int, help="chunks to train on (down-sampled, seeded)")
    p.add_argument("--test-size", type=_positive_int, help="test chunks for perplexity")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 on CUDA (else fp16) and on CPUs with native bf16, else fp32")
    p.add_argument("--gradient-accumulation", type=_positive_int, default=1)
    p.add_argument("--eval-steps", type=_positive_int)
    p.add_argument("--save-steps", type=_positive_int)
    p.add_argument("--logging-steps", type=_positive_int)
    p.add_argument("--freeze-embeddings", action="store_true", help="keep the word embeddings fixed")
    common(p)

    p = sub.add_parser("runs", help="list the runs in the run store")
    common(p, model=False)

    p = sub.add_parser("eval", help="masked-LM perplexity of a model on a corpus (fixed-seed masking)")
    p.add_argument("corpus")
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--text-field", default="text")
    p.add_argument("--test-size", type=_positive_int, help="evaluate on this many chunks (seeded sample)")
    common(p)

    p = sub.add_parser("vocab", help="how the tokenizer cuts a corpus into words and pieces, beside "
                       "general English")
    p.add_argument("corpus")
    p.add_argument("--model", default=argparse.SUPPRESS, help="directory, run id, starter or hub id")
    p.add_argument("--top", type=_positive_int, default=50, help="words to list, most in need of adapting")
    p.add_argument("--min-count", type=_positive_int, default=5, help="rank only words seen this often")
    p.add_argument("--text-field", default="text")
    common(p, model=False)
    return parser


def _version() -> str:
    from mlm_tui import __version__

    return f"mlm-tui {__version__}"


# -- output ---------------------------------------------------------------------------------------------
def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def print_event(event: dict[str, Any]) -> None:
    """Training progress as plain lines on stderr (they read well in a log file and over ssh)."""
    kind = event["event"]
    if kind == "status":
        say(event["message"])
    elif kind == "plan":
        eval_note = f", eval every {event['eval_steps']}" if event.get("eval_steps") else ""
        say(f"device {event['device']} ({event['precision']}), batch {event['batch_size']}, "
            f"{event['steps']} steps ({event['steps_per_epoch']}/epoch), {event['train_chunks']} train / "
            f"{event['test_chunks']} test chunks, checkpoint every {event['save_steps']}{eval_note}")
        for note in event.get("notes", []):
            say(f"note: {note}")
    elif kind == "step":
        say(f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  "
            f"{event['tokens_per_s']:.0f} tok/s  ETA {format_duration(event['eta'])}")
    elif kind == "eval":
        say(f"perplexity {event['perplexity']:.2f} at step {event['step']}")


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data))
    else:
        print(text)


# -- commands -------------------------------------------------------------------------------------------
def cmd_fill(args: argparse.Namespace) -> None:
    from mlm_tui.models import load_model

    handle = load_model(args.model, allow_pickle=args.allow_pickle)
    result = handle.fill(args.text, top_k=args.top_k)
    lines = []
    for n, mask in enumerate(result.masks, 1):
        lines.append(f"mask {n} (token {mask.index}):")
        lines += [f"  {f.score * 100:5.1f}%  {f.token:<15} {f.sequence}" for f in mask.fills]
    _emit(args, result.to_dict(), "\n".join(lines))


def _tokenizer_and_splits(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from mlm_tui.chunking import check_chunk_size, open_tokenizer, tokenize_corpus

    tokenizer = open_tokenizer(args.model)
    check_chunk_size(args.chunk_size, tokenizer)
    splits = tokenize_corpus(args.corpus, tokenizer, args.text_field, status=say if not args.json else None)
    return tokenizer, splits


def cmd_chunks(args: argparse.Namespace) -> None:
    if args.show < 0:
        raise UsageError("--show must be zero or more")
    tokenizer, splits = _tokenizer_and_splits(args)
    stats = {name: s.stats(args.chunk_size) for name, s in splits.items()}
    data: dict[str, Any] = {"corpus": args.corpus, "chunk_size": args.chunk_size, "splits": stats}
    lines = [f"{args.corpus}, chunks of {args.chunk_size} tokens"]
    for name, s in stats.items():
        lines.append(f"  {name:<12} {s['documents']:>9,} documents {s['tokens']:>12,} tokens "
                     f"{s['chunks']:>10,} chunks {s['dropped_tokens']:>5} dropped")
    if args.show:
        first = next(iter(splits.values())).chunks(args.chunk_size)[: args.show]
        examples = [tokenizer.decode([int(t) for t in chunk]) for chunk in first]
        data["examples"] = examples
        lines += [f"\n--- chunk {i} ---\n{text}" for i, text in enumerate(examples)]
    _emit(args, data, "\n".join(lines))


def eval_corpus(corpus: str, model: str, chunk_size: int, text_field: str = "text",
                test_size: int | None = None, allow_pickle: bool = False) -> dict[str, Any]:
    import numpy as np

    from mlm_tui.chunking import check_chunk_size, tokenize_corpus
    from mlm_tui.evaluate import EvalSet, perplexity
    from mlm_tui.masking import TokenTables
    from mlm_tui.models import load_model

    handle = load_model(model, allow_pickle=allow_pickle)
    check_chunk_size(chunk_size, handle.tokenizer)
    splits = tokenize_corpus(corpus, handle.tokenizer, text_field)
    chunks = np.concatenate([s.chunks(chunk_size) for s in splits.values()])
    if test_size is not None and test_size < len(chunks):
        chunks = chunks[np.sort(np.random.default_rng(0).choice(len(chunks), test_size, replace=False))]
    evalset = EvalSet.build(chunks, TokenTables.from_tokenizer(handle.tokenizer))
    return perplexity(handle.model, evalset, 32, handle.device).to_dict()


def cmd_eval(args: argparse.Namespace) -> None:
    result = eval_corpus(args.corpus, args.model, args.chunk_size, args.text_field, args.test_size,
                         args.allow_pickle)
    _emit(args, result, f"perplexity {result['perplexity']:.2f} on {result['chunks']} chunks "
          f"({result['masked_tokens']} masked tokens)")


def cmd_runs(args: argparse.Namespace) -> None:
    """List runs, newest first; with --json: `{"runs": [summary, ...]}` (see `runstore.Run.summary`).

    Runs whose files cannot be read get one line each on stderr and are left out.
    """
    from mlm_tui.runstore import list_summaries

    rows, problems = list_summaries()
    for line in problems:
        say(line)

    def ppl(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, int | float) else "-"

    lines = [f"{'run':<21} {'status':<11} {'steps':>6} {'ppl before':>10} {'after':>8}  model / corpus"]
    lines += [f"{r['run_id']:<21} {r['status']:<11} {r['steps']:>6} {ppl(r['perplexity_before']):>10} "
              f"{ppl(r['perplexity_after']):>8}  {r['model']} / {r['corpus']}" for r in rows]
    _emit(args, {"runs": rows}, "\n".join(lines) if rows else "no runs yet")


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
    from mlm_tui import runstore
    from mlm_tui.training import TrainConfig, Trainer

    threads = os.environ.get("MLM_TUI_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    if args.resume:
        run = runstore.find_run(args.resume)
        if run is None:
            raise UsageError(f"no run called {args.resume!r} (see: mlm-tui runs)")
        trainer = Trainer(TrainConfig.from_dict(run.config()), resume=run, on_event=print_event,
                          should_stop=should_stop)
    else:
        if not args.corpus:
            raise UsageError("mlm-tui train: give a CORPUS (or --resume RUN_ID)")
        config = TrainConfig(
            corpus=args.corpus, model=args.model, chunk_size=args.chunk_size,
            mlm_probability=args.mlm_probability, whole_word_mask=args.whole_word_mask,
            batch_size=args.batch_size, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps, epochs=args.epochs, max_steps=args.max_steps,
            train_size=args.train_size, test_size=args.test_size, seed=args.seed, device=args.device,
            precision=args.precision, gradient_accumulation=args.gradient_accumulation,
            eval_steps=args.eval_steps, save_steps=args.save_steps, logging_steps=args.logging_steps,
            text_field=args.text_field, freeze_embeddings=args.freeze_embeddings,
            allow_pickle=args.allow_pickle)
        trainer = Trainer(config, on_event=print_event, should_stop=should_stop)
    result = trainer.run()
    if not result:
        return  # a secondary process of `accelerate launch`: the main process reports
    _emit(args, result, f"run {result['run_id']} completed: perplexity {result['perplexity_before']:.2f} -> "
          f"{result['perplexity_after']:.2f} in {result['steps']} steps; model at {result['model_path']}")


def cmd_workbench(args: argparse.Namespace) -> None:
    from mlm_tui.app.main import run_app

    run_app(model=args.model, data=args.data)


def cmd_vocab(args: argparse.Namespace) -> None:
    """Corpus figures beside the shipped general-English sample, then the words that most need adapting;
    with --json: `vocab.VocabReport.to_dict()`."""
    from mlm_tui.chunking import open_tokenizer
    from mlm_tui.vocab import REFERENCE_NAME, analyse_corpus

    report = analyse_corpus(args.corpus, open_tokenizer(args.model), args.model, args.text_field,
                            args.min_count, args.top, status=None if args.json else say)
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
        lines.append(f"\nwords most in need of adapting: count x (pieces - 1), seen {args.min_count}+ times")
        lines += [f"{w.count:>9,}  {w.word:<24} {' '.join(w.pieces)}" for w in report.top]
    else:
        lines.append(f"\nno word seen {args.min_count}+ times is cut into pieces")
    _emit(args, report.to_dict(), "\n".join(lines))


COMMANDS = {"fill": cmd_fill, "chunks": cmd_chunks, "train": cmd_train, "runs": cmd_runs, "eval": cmd_eval,
            "vocab": cmd_vocab}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        from mlm_tui.home import configure_hf_environment

        configure_hf_environment()
        COMMANDS.get(args.command, cmd_workbench)(args)
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        return _closed_stdout()
    except MlmError as exc:
        return _fail(str(exc), exc.exit_code, want_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, want_json)
    except Exception as exc:
        # A bug or an environment failure we did not foresee (a full disk while saving the final model, a
        # library error): still one line, as promised; MLM_TUI_DEBUG=1 shows the traceback.
        if os.environ.get("MLM_TUI_DEBUG"):
            raise
        return _fail(f"{type(exc).__name__}: {first_line(exc)[:200]}", 1, want_json)


def _fail(message: str, code: int, want_json: bool) -> int:
    try:
        say(f"error: {message}" if code != 130 else message)
        if want_json:
            print(json.dumps({"error": message}), flush=True)
    except BrokenPipeError:
        return _closed_stdout()
    return code


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
