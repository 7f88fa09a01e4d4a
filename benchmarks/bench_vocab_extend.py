"""Does `--extend-vocab N` help, judged fairly? Bits per character (PLL-word-l2r, `mlm_tui.bpc`) of the base
model, a plain fine-tune and extended fine-tunes, over the same test text.

N is chosen on one corpus and the choice reported on another, held out:

- fit: licence texts (every distinct paragraph of the machine's /usr/share/doc/*/copyright files, as
  `bench_lr_default.legal_corpus` builds them); runs plain and with --extend-vocab 100, 500 and 2000;
- held out: manual pages (paragraphs of /usr/share/man/man1 pages, roff markup stripped); runs plain and
  with the N that did best on the fit corpus (and, with `--heldout-ns`, the other N, for the table's sake).

Every run is `starter` at the default settings for `--steps` steps (150 in the README; the test split is the
default 10% of documents held out, of which `--test-size` chunks measure perplexity), and every bits-per-
character figure is over the first `--chars` characters of the same held-out documents. Each run takes the
default learning rate (`auto`: its own range test), and an extended model's test can choose another rate
than the plain one's; then a plain run at that rate too (`plain at RATE`), so that the vocabulary's share of
a gain is told apart from the rate's. Also: the bits per occurrence of the added words (the largest
extension's words, in every model), and CPU time.

    python benchmarks/bench_vocab_extend.py --out vocab_extend.json

Results are appended to --out as they come, and a rerun skips the rows already there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_corpus

FIT_NS = [100, 500, 2000]
_ESCAPES = re.compile(r"\\f[A-Z0-9]|\\f\[[^]]*\]|\\f\(..|\\\(..|\\[&|^~0 ]|\\s[-+]?\d")


def man_corpus(path: Path, pages: int = 1500) -> Path:
    """Paragraphs (200+ characters) of the first `pages` section-1 manual pages, roff markup stripped."""
    if path.exists():
        return path
    seen: dict[str, None] = {}
    for page in sorted(Path("/usr/share/man/man1").glob("*.1.gz"))[:pages]:
        try:
            source = gzip.decompress(page.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        para: list[str] = []
        for line in [*source.splitlines(), ".PP"]:
            if line.startswith((".", "'")):
                macro, _, rest = line[1:].partition(" ")
                if macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM"):
                    para.append(rest.replace('"', ""))
                    continue
                text = _ESCAPES.sub("", " ".join(para)).replace("\\-", "-").replace("\\", "")
                text = " ".join(text.split())
                if len(text) >= 200:
                    seen[text] = None
                para = []
            else:
                para.append(line)
    return write_corpus(path, seen)


def train(args: argparse.Namespace, corpus: Path, extend: int, rate: float | None = None) -> dict:
    """One run through the CLI's engine, with its wall and CPU time; `rate` None is the default (`auto`)."""
    from accelerate.state import AcceleratorState

    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    AcceleratorState._reset_state()

    config = TrainConfig(corpus=str(corpus), model=args.model, max_steps=args.steps, test_size=args.test_size,
                         no_general=True, extend_vocab=extend, batch_size=args.batch_size,
                         chunk_size=args.chunk_size, bpc_chars=0,  # measured below, on more characters
                         **({} if rate is None else {"learning_rate": rate}))
    t, cpu = time.perf_counter(), time.process_time()
    result = TrainingRun(config).run()
    result["wall_s"], result["cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
    return result


def measure(model_ref: str, texts: list[str], focus: list[str], window: int) -> dict:
    from mlm_tui.bpc import pll_bits
    from mlm_tui.models import load_model

    handle = load_model(model_ref)
    t = time.perf_counter()
    out = pll_bits(handle.model, handle.tokenizer, texts, window=window, focus=focus).to_dict()
    out["seconds"] = time.perf_counter() - t
    return out


def table(rows: list[dict]) -> str:
    """The README's table: per corpus, the base model and each run, bits per character over the same text."""
    out = ["| corpus | model | learning rate (`auto`) | perplexity before -> after (own tokens) | bits per "
           "character | vs plain at the same rate | bits per word | added words: bits per occurrence "
           "(occurrences) | training CPU / wall |", "|" + "---|" * 9]
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        runs = {r["label"]: r for r in rows if r["corpus"] == corpus and not r["label"].startswith("bpc ")}
        bpc = {r["label"][4:]: r for r in rows if r["corpus"] == corpus and r["label"].startswith("bpc ")}
        plain = {r["learning_rate"]: bpc[label]["bpc"] for label, r in runs.items()
                 if r["n"] == 0 and label in bpc}  # the plain runs' bits per character, by rate
        for label in ["base", *runs]:
            b, run = bpc.get(label), runs.get(label)
            rate = f"{run['learning_rate']:.2g}" if run else "-"
            ppl = f"{run['perplexity_before']:.2f} -> {run['perplexity_after']:.2f}" if run else "-"
            cost = f"{run['cpu_s']:.0f} s / {run['wall_s']:.0f} s" if run else "-"
            if b is None:
                out.append(f"| {corpus} | {label} | {rate} | {ppl} | not measured | | | | {cost} |")
                continue
            same = plain.get(run["learning_rate"]) if run and run["n"] else None
            versus = f"{b['bpc'] / same - 1:+.1%}" if same else ""
            focus = (f"{b['focus_bits_per_occurrence']:.1f} ({b['focus_occurrences']})"
                     if b["focus_bits_per_occurrence"] is not None else "-")
            out.append(f"| {corpus} | {label} | {rate} | {ppl} | {b['bpc']:.3f} | {versus} "
                       f"| {b['bits_per_word']:.1f} | {focus} | {cost} |")
    return "\n".join(out)


def main() -> None:
    from mlm_tui.bpc import measured_texts
    from mlm_tui.runstore import find_run

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("vocab_extend.json"))
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--test-size", type=int, default=50)
    parser.add_argument("--chars", type=int, default=12_000)
    parser.add_argument("--model", default="starter", help="starter, or 'starter-2' for its first 2 layers")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the device's")
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--ns", default=",".join(map(str, FIT_NS)), help="the N tried on the fit corpus")
    parser.add_argument("--stage", choices=("all", "fit", "heldout"), default="all")
    parser.add_argument("--chosen", type=int, help="the N for the held-out corpus (default: the fit's best; "
                        "0: its plain run alone)")
    parser.add_argument("--heldout-ns", default="", help="more N to run on the held-out corpus besides the "
                        "chosen one (reported apart: they were not chosen before it was seen)")
    parser.add_argument("--table", action="store_true", help="print the table of --out, and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    from bench_lr_default import cut_starter, legal_corpus

    if args.model == "starter-2":
        args.model = str(cut_starter(args.data / "starter-2", 2))

    corpora = {"licences": legal_corpus(args.data / "licences.jsonl"),
               "manpages": man_corpus(args.data / "manpages.jsonl")}
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for row in rows:  # rows from before the rate was recorded: the run has it
        if "run_id" in row and "learning_rate" not in row:
            row["learning_rate"] = find_run(row["run_id"]).info().learning_rate

    def done(corpus: str, label: str) -> dict | None:
        return next((r for r in rows if r["corpus"] == corpus and r["label"] == label), None)

    def record(row: dict) -> None:
        rows.append(row)
        args.out.write_text(json.dumps(rows, indent=1))
        print(json.dumps({k: v for k, v in row.items() if k != "added"}), flush=True)

    def runs(name: str, ns: list[int]) -> None:
        """The plain run and one per N, then (with some N) every model's bits per character."""
        texts = measured_texts(str(corpora[name]), max_chars=args.chars)
        results: dict[int | str, dict] = {}
        def one(label: str, n: int, rate: float | None = None) -> dict:
            row = done(name, label)
            if row is None:
                result = train(args, corpora[name], n, rate)
                ext = find_run(result["run_id"]).config().get("vocab_extension") or {}
                row = {"corpus": name, "label": label, "n": n, "run_id": result["run_id"],
                       "perplexity_before": result["perplexity_before"],
                       "perplexity_after": result["perplexity_after"], "wall_s": result["wall_s"],
                       "cpu_s": result["cpu_s"], "steps": result["steps"],
                       "learning_rate": result["learning_rate"],
                       "added": [w["word"] for w in ext.get("words", [])]}
                record(row)
            return row

        for n in [0, *ns]:
            results[n] = one("plain" if n == 0 else f"extend {n}", n)
        # The default rate is each run's own range test, and an extended model's can differ from the plain
        # one's: a plain run at each such rate tells the vocabulary's share of a gain from the rate's.
        for rate in sorted({results[n]["learning_rate"] for n in ns} - {results[0]["learning_rate"]}):
            results[f"plain at {rate:.2g}"] = one(f"plain at {rate:.2g}", 0, rate)
        if not ns:
            return
        focus = results[max(ns)]["added"]  # the largest extension's words: each model's cost on them
        for label, ref in [("base", args.model), *((r["label"], r["run_id"]) for r in results.values())]:
            key = f"bpc {label}"
            if done(name, key) is None:
                record({"corpus": name, "label": key, "model": ref,
                        **measure(ref, texts, focus, args.chunk_size)})

    if args.stage in ("all", "fit"):
        runs("licences", [int(n) for n in args.ns.split(",")])
    if args.stage == "fit":
        return
    if args.chosen is None:
        fit = [r for r in rows if r["corpus"] == "licences" and r["label"].startswith("bpc extend")]
        args.chosen = int(min(fit, key=lambda r: r["bpc"])["label"].split()[-1])
        print(f"chosen on the licence texts: --extend-vocab {args.chosen}", flush=True)
    more = [int(n) for n in args.heldout_ns.split(",") if n and int(n) != args.chosen]
    runs("manpages", ([args.chosen] if args.chosen else []) + more)


if __name__ == "__main__":
    main()
