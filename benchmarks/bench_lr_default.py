"""Does a run with no `--learning-rate` adapt? 150-step runs at fixed rates and at the default.

For each corpus and model: the perplexity drop on the run's held-out test split, and the change of the
general-English perplexity (the run's own "what it cost"), of a 150-step run at batch 16 (chunks of 128)
at each fixed rate 2e-5, 5e-5, 1e-4, 3e-4, 1e-3 and at the default (no rate given), with the process CPU
time of each run. The bar (issue 21): the default's drop is at least 90% of the best drop among the fixed
rates whose general-text perplexity rises by at most 10%, its own rise is at most 10%, and on the median
row at least 97%.

    python benchmarks/bench_lr_default.py --foldoc foldoc.jsonl --out benchmarks/lr_default_results.json

Corpora (built here, see README): FOLDOC (technical; `dict-foldoc`'s entries, as `scripts/build_starter.py
gather` writes them), licence texts (legal; every distinct paragraph of /usr/share/doc/*/copyright),
man pages (the DESCRIPTION sections of this machine's man pages, `scripts/build_man_sections.py`) and
Python's docstrings (every distinct docstring of 200+ characters in the standard library's source; held
out: the rule was fitted on the other three) and Python's source code (a third of the standard library's
top-level functions and classes; held out from the rule and from the pullback, which was chosen on the
licence texts).
Models: `starter` (6 layers), its first 2 layers with its head (`starter-2l`), and `starter` with each
layer repeated (`starter-12l`, 12 layers). Results are appended to --out as they come, and a rerun skips
the rows already there; `--table` prints the table of a results file with the fitting rows marked.

The licence texts and the man pages are read from what the machine has installed, so another machine
builds other texts under the same names. Each row records its corpus's fingerprint (`corpus_sha`, of the
JSONL file): a rerun runs again every row whose corpus changed, and the table never puts runs of two
different texts in one row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_corpus

FIXED = [2e-5, 5e-5, 1e-4, 3e-4, 1e-3]
FIT = {"legal", "foldoc", "man"}  # corpora the rule was fitted on (README); the docstrings are held out
MAX_RISE = 0.10  # of general-text perplexity
MAX_COST = 0.10  # the range test's extra process CPU time


def legal_corpus(path: Path) -> Path:
    """Distinct paragraphs of the installed packages' copyright files, one document each."""
    if path.exists():
        return path
    seen: dict[str, None] = {}
    for f in sorted(Path("/usr/share/doc").glob("*/copyright")):
        text = f.read_text(encoding="utf-8", errors="replace")
        for para in text.split("\n\n"):
            para = " ".join(para.split())
            if len(para) >= 200:
                seen[para] = None
    return write_corpus(path, seen)


def man_corpus(path: Path) -> Path:
    """The man pages' DESCRIPTION texts (train and test pages alike: the run splits them itself)."""
    if path.exists():
        return path
    built = path.parent / "man-sections"
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" /
                                        "build_man_sections.py"), str(built)], check=True)
    return write_corpus(path, (json.loads(line)["text"] for name in ("train.jsonl", "test.jsonl")
                               for line in (built / name).read_text(encoding="utf-8").splitlines()))


def stdlib_modules() -> Iterator[tuple[str, Any]]:
    """Each module of Python's standard library, its own tests and IDLE left out, as (source, `ast` tree):
    read, never imported."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3"}
    for f in sorted(root.rglob("*.py")):
        if skip & set(f.relative_to(root).parts):
            continue
        try:
            source = f.read_text(encoding="utf-8")
            yield source, ast.parse(source)
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue


def pydoc_corpus(path: Path) -> Path:
    """The docstrings of Python's standard library: every distinct one of 200+ characters, one document
    each."""
    if path.exists():
        return path
    import ast

    seen: dict[str, None] = {}
    for _, tree in stdlib_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = " ".join((ast.get_docstring(node) or "").split())
                if len(doc) >= 200:
                    seen[doc] = None
    return write_corpus(path, seen)


def pycode_corpus(path: Path) -> Path:
    """Python source code: each top-level function and class of the standard library as one document,
    docstrings and comments kept, every distinct one of 200 to 4,000 characters, one in three (by a hash of
    the text, so the same text is chosen on every machine with the same Python). Held out from every choice
    of the default, the pullback's included: the corpus farthest from general English, where a run costs
    most."""
    if path.exists():
        return path
    import ast

    seen: dict[str, None] = {}
    for source, tree in stdlib_modules():
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_source_segment(source, node) or ""
                if 200 <= len(text) <= 4000 and hashlib.sha256(text.encode()).digest()[0] % 3 == 0:
                    seen[text] = None
    return write_corpus(path, seen)


def cut_starter(path: Path, layers: int) -> Path:
    """`starter` with `layers` encoder layers: its first ones (fewer), or each one repeated (more)."""
    if (path / "config.json").exists():
        return path
    import copy

    from mlm_tui.models import load_model

    handle = load_model("starter")
    model = handle.model
    own = list(model.bert.encoder.layer)
    if layers <= len(own):
        chosen = own[:layers]
    else:
        chosen = [copy.deepcopy(layer) for layer in own for _ in range(layers // len(own))]
    model.bert.encoder.layer = type(model.bert.encoder.layer)(chosen)
    model.config.num_hidden_layers = len(chosen)
    model.save_pretrained(path)
    handle.tokenizer.save_pretrained(path)
    return path


def fingerprint(corpus: Path) -> str:
    """The first 12 hex digits of the corpus file's SHA-256: which text a row ran on."""
    digest = hashlib.sha256()
    with open(corpus, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def one_run(corpus: Path, model: str, rate: float | None, args: argparse.Namespace) -> dict:
    """One 150-step run in a fresh process, as a user's `mlm-tui train` is: a run after another in the same
    process found torch imported and its kernels warm, which put 2 to 3 s of a 2-layer run's CPU time on
    whichever ran first (the default, before its pair)."""
    given = {"corpus": str(corpus), "model": model, "rate": rate, "steps": args.steps,
             "batch_size": args.batch_size, "chunk_size": args.chunk_size, "test_size": args.test_size}
    proc = subprocess.run([sys.executable, __file__, "--foldoc", "-", "--one", json.dumps(given)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"a run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_here(given: dict) -> dict:
    """The run `one_run` asks for, timed in process CPU time from its start to its result; with the CPU
    time of what `auto` adds to a run (the range test, the model's second load and the pullback's
    search), as the run spent it: a pair of runs differs by +-5% with no test at all."""
    from mlm_tui import training
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    spent: dict[str, list[float]] = {}

    def counted(owner: type, name: str) -> None:
        inner = getattr(owner, name)

        def timed(*a: object, **k: object) -> object:
            start = time.process_time()
            try:
                return inner(*a, **k)
            finally:
                spent.setdefault(name, []).append(time.process_time() - start)

        setattr(owner, name, timed)

    for owner, name in ((training.FineTune, "_range_test"), (training.FineTune, "_load_model"),
                        (training._Steps, "_pull_back")):
        counted(owner, name)

    rate = {} if given["rate"] is None else {"learning_rate": given["rate"]}
    config = TrainConfig(corpus=given["corpus"], model=given["model"], max_steps=given["steps"],
                         batch_size=given["batch_size"], chunk_size=given["chunk_size"],
                         test_size=given["test_size"], bpc_chars=0, **rate)
    t, cpu = time.perf_counter(), time.process_time()
    result = TrainingRun(config).run()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"before": result["perplexity_before"], "after": result["perplexity_after"],
            "general_before": result["general_perplexity_before"],
            "general_after": result["general_perplexity_after"], "wall": wall, "cpu": cpu,
            "lr": result["learning_rate"], "how": result["learning_rate_reason"], "run_id": result["run_id"],
            "auto_cpu": sum(spent.get("_range_test", [])) + sum(spent.get("_load_model", [])[1:])
            + sum(spent.get("_pull_back", []))}


def key(row: dict) -> str:
    """A run's place in its row: a fixed rate, the default, or `paired` (given the default's own rate)."""
    return "default" if row["rate"] is None else "paired" if row.get("paired") else f"{row['rate']:g}"


def table(rows: list[dict]) -> str:
    """One line per corpus and model; the verdict waits for every fixed rate and the default."""
    names = [f"{r:g}" for r in FIXED]
    out = ["| corpus | model | fit/held out | ppl before | " + " | ".join(names) + " | default | "
           "default / best allowed drop | default extra CPU | passes |", "|" + "---|" * (len(FIXED) + 8)]
    groups: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["corpus"], r.get("corpus_sha", "?"), r["model"]), {})[key(r)] = r
    texts: dict[str, set[str]] = {}
    for corpus, sha, _ in groups:
        texts.setdefault(corpus, set()).add(sha)
    shares = []
    for (corpus, sha, model), runs in sorted(groups.items()):
        drop = {k: 1 - v["after"] / v["before"] for k, v in runs.items()}
        rise = {k: v["general_after"] / v["general_before"] - 1 for k, v in runs.items()}
        cells = [f"{-drop[k]:+.1%} / {rise[k]:+.1%}, {runs[k]['cpu']:.0f} s" if k in runs else "not run"
                 for k in [*names, "default"]]
        if "default" in runs:
            cells[-1] += f" at {runs['default']['lr']:.1e}"
        allowed = [k for k in names if k in runs and rise[k] <= MAX_RISE]
        share = extra = verdict = "-"
        if "default" in runs and len([k for k in names if k in runs]) == len(names) and allowed:
            best = max(allowed, key=drop.__getitem__)
            ratio = drop["default"] / drop[best]
            shares.append(ratio)
            # the range test's cost: the CPU time the run spent on what `auto` adds, against the rest of the
            # run, where the run counted it; beside it the run given the default's own rate (the same run
            # but for the test: a check that the training after the test costs no more, within the +-5%
            # of two runs alike), else the fixed rates' median (other rates, maybe another session)
            default = runs["default"]
            paired = "paired" in runs
            base = runs["paired"]["cpu"] if paired else statistics.median(runs[k]["cpu"] for k in names)
            against = f"{default['cpu'] / base - 1:+.0%} {'paired' if paired else 'median'}"
            if "auto_cpu" in default:
                cost = default["auto_cpu"] / (default["cpu"] - default["auto_cpu"])
                extra = f"{cost:+.1%} ({against})"
            else:
                cost = default["cpu"] / base - 1
                extra = against
            share = f"{ratio:.0%} (of {best})"
            failed = [what for what, bad in (("share", ratio < 0.9), ("general", rise["default"] > MAX_RISE),
                                             ("CPU", cost > MAX_COST)) if bad]
            verdict = f"no ({', '.join(failed)})" if failed else "yes"
        fit = "fit" if corpus in FIT else "held out"
        name = f"{corpus} ({sha})" if len(texts[corpus]) > 1 else corpus  # two texts under one name
        out.append(f"| {name} | {model} | {fit} | {runs[next(iter(runs))]['before']:.1f} | "
                   + " | ".join(cells) + f" | {share} | {extra} | {verdict} |")
    if shares:
        out.append(f"\nmedian share over {len(shares)} complete rows: {statistics.median(shares):.0%} "
                   "(bar 97%)")
    out.append("cells: perplexity drop on the test split / general-English perplexity change, process CPU "
               "time")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foldoc", type=Path, required=True, help="foldoc.jsonl")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlm-lr-default"),
                        help="built corpora and models")
    parser.add_argument("--out", type=Path, default=Path("lr_default.json"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="corpus/model pairs: foldoc/starter ...")
    parser.add_argument("--rates", nargs="+", default=[*map(str, FIXED), "default", "paired"],
                        help="in this order; paired: the default's own rate, given (the range test's cost)")
    parser.add_argument("--table", nargs="+", type=Path, help="print the table of these files, exit")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a run of `one_run`'s, in its own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_here(json.loads(args.one))))
        return
    if args.table:
        print(table([row for path in args.table for row in json.loads(path.read_text())]))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLM_TUI_HOME", str(args.work / "home"))
    corpora = {"legal": legal_corpus(args.work / "legal.jsonl"), "foldoc": args.foldoc,
               "man": man_corpus(args.work / "man.jsonl"), "pydoc": pydoc_corpus(args.work / "pydoc.jsonl"),
               "pycode": pycode_corpus(args.work / "pycode.jsonl")}
    models = {"starter-2l": str(cut_starter(args.work / "starter-2l", 2)), "starter": "starter",
              "starter-12l": str(cut_starter(args.work / "starter-12l", 12))}
    shas = {name: fingerprint(path) for name, path in corpora.items()}
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["corpus"], r.get("corpus_sha"), r["model"], key(r)) for r in rows}
    pairs = args.only or [f"{c}/{m}" for m in models for c in corpora]
    for pair in pairs:
        cname, mname = pair.split("/")
        for name in args.rates:
            rate = None if name in ("default", "paired") else float(name)
            if (cname, shas[cname], mname, name if rate is None else f"{rate:g}") in done:
                continue
            extra = {}
            if name == "paired":  # the default's own rate, given: the same run but for the range test
                default = next((r for r in rows if r["corpus"] == cname and r.get("corpus_sha") == shas[cname]
                                and r["model"] == mname and key(r) == "default"), None)
                if default is None:
                    continue
                rate, extra = default["lr"], {"paired": True}
            row = {"corpus": cname, "corpus_sha": shas[cname], "model": mname, "rate": rate, **extra,
                   **one_run(corpora[cname], models[mname], rate, args)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
