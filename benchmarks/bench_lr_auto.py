"""Does `--learning-rate auto` earn the default? 150-step runs at each fixed rate and at `auto`.

For each corpus and model: the held-out perplexity drop and the wall time of a run at 2e-5, 5e-5, 1e-4,
3e-4 and `auto`. `auto` passes when its drop is at least 90% of the best fixed rate's, at no more than 25%
more wall time than the fixed runs' median (issue 15's bar; the median, since the first run of a corpus
also tokenizes it). Small enough for 2 CPU cores.

    python benchmarks/bench_lr_auto.py --foldoc foldoc.jsonl --out lr_auto.json

Corpora: FOLDOC (technical; `foldoc.jsonl` as `scripts/build_starter.py gather` writes it from Debian's
`dict-foldoc`) and licence texts (legal; every distinct paragraph of the machine's
/usr/share/doc/*/copyright files). Models: `starter` (6 layers) and its first 2 layers with its head.
Results are appended to --out as they come, and a rerun skips the rows already there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATES: list[float | str] = [2e-5, 5e-5, 1e-4, 3e-4, "auto"]


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
    with open(path, "w", encoding="utf-8") as fh:
        for para in seen:
            fh.write(json.dumps({"text": para}) + "\n")
    return path


def two_layer_starter(path: Path) -> Path:
    """`starter` cut to its first 2 encoder layers, with its own embeddings and head: a smaller model."""
    if (path / "config.json").exists():
        return path
    from mlm_tui.models import load_model

    handle = load_model("starter")
    model = handle.model
    model.bert.encoder.layer = model.bert.encoder.layer[:2]
    model.config.num_hidden_layers = 2
    model.save_pretrained(path)
    handle.tokenizer.save_pretrained(path)
    return path


def one_run(corpus: Path, model: str, rate: float | str, args: argparse.Namespace) -> dict:
    from accelerate.state import AcceleratorState

    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    AcceleratorState._reset_state()
    config = TrainConfig(corpus=str(corpus), model=model, max_steps=args.steps, batch_size=args.batch_size,
                         chunk_size=args.chunk_size, test_size=args.test_size, learning_rate=rate)
    trainer = TrainingRun(config)
    t, cpu = time.perf_counter(), time.process_time()
    result = trainer.run()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    lr = rate if rate != "auto" else json.loads((Path(result["model_path"]).parent / "config.json")
                                                .read_text())["lr_find"]["suggested"]
    return {"before": result["perplexity_before"], "after": result["perplexity_after"], "wall": wall,
            "cpu": cpu, "lr": lr, "run_id": result["run_id"]}


def table(rows: list[dict]) -> str:
    """One line per corpus and model; a rate not run yet shows as such, and the verdict waits for all."""
    fixed = [str(r) for r in RATES if r != "auto"]
    out = ["| corpus | model | ppl before | " + " | ".join(fixed) + " | auto | auto / best drop | "
           "auto extra time: wall, CPU | passes |", "|" + "---|" * (len(RATES) + 6)]
    groups: dict[tuple[str, str], dict] = {}
    from mlm_tui.lr_find import FRACTION

    for r in rows:
        if r["rate"] == "auto" and r.get("fraction", FRACTION) != FRACTION:
            continue  # a row of an earlier rule (benchmarks/lr_auto_results.json keeps them)
        groups.setdefault((r["corpus"], r["model"]), {})[str(r["rate"])] = r
    for (corpus, model), runs in groups.items():
        drop = {k: 1 - v["after"] / v["before"] for k, v in runs.items()}
        cells = [f"{runs[k]['after']:.1f} (-{drop[k]:.1%}, {runs[k]['wall']:.0f} s)" if k in runs
                 else "not run" for k in fixed]
        auto = runs.get("auto")
        cells.append(f"{auto['after']:.1f} (-{drop['auto']:.1%}, {auto['wall']:.0f} s) at {auto['lr']:.1e}"
                     if auto else "not run")
        ran = [k for k in fixed if k in runs]
        verdict = share = extra = "-"
        if auto and ran:
            best = max(ran, key=drop.__getitem__)
            ratio = drop["auto"] / drop[best]
            wall = auto["wall"] / statistics.median(runs[k]["wall"] for k in ran) - 1
            cpus = [runs[k]["cpu"] for k in ran if "cpu" in runs[k]]
            cpu = f"{auto['cpu'] / statistics.median(cpus) - 1:+.0%}" if "cpu" in auto and cpus else "-"
            share, extra = f"{ratio:.0%} (best {best})", f"{wall:+.0%}, {cpu}"
            verdict = ("yes" if ratio >= 0.9 and wall <= 0.25 else "no") if len(ran) == len(fixed) else (
                f"open: {len(ran)} of {len(fixed)} fixed rates run")
        before = next(iter(runs.values()))["before"]
        out.append(f"| {corpus} | {model} | {before:.1f} | " + " | ".join(cells)
                   + f" | {share} | {extra} | {verdict} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foldoc", type=Path, required=True, help="foldoc.jsonl")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mlm-lr-auto"), help="built corpora and model")
    parser.add_argument("--out", type=Path, default=Path("lr_auto.json"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--test-size", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="corpus/model pairs: foldoc/starter ...")
    parser.add_argument("--rates", nargs="+", default=[str(r) for r in RATES], help="in this order")
    parser.add_argument("--table", nargs="+", type=Path, help="print the table of these files, exit")
    args = parser.parse_args()
    if args.table:
        print(table([row for path in args.table for row in json.loads(path.read_text())]))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLM_TUI_HOME", str(args.work / "home"))
    corpora = {"foldoc": args.foldoc, "legal": legal_corpus(args.work / "legal.jsonl")}
    models = {"starter": "starter", "starter-2l": str(two_layer_starter(args.work / "starter-2l"))}
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["corpus"], r["model"], str(r["rate"])) for r in rows}
    for cname, corpus in corpora.items():
        for mname, model in models.items():
            if args.only and f"{cname}/{mname}" not in args.only:
                continue
            for rate in (r if r == "auto" else float(r) for r in args.rates):
                if (cname, mname, str(rate)) in done:
                    continue
                row = {"corpus": cname, "model": mname, "rate": rate, **one_run(corpus, model, rate, args)}
                print(json.dumps(row), flush=True)
                rows.append(row)
                args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
