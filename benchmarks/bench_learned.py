"""The word test's cost (`runs learned`) next to the run's own perplexity measurement.

    MLM_TUI_HOME=... python benchmarks/bench_learned.py RUN_ID [--repeat 1]

Both with the run's model, on the same device and threads: the perplexity on the run's test chunks (what
training measures before and after), and the word test of one model (its chunks of the test split with
the chosen occurrences masked, the words of `learned.word_targets`). `runs learned` runs the word test
twice (base and run model). Target (issue 22): on a 100-chunk test sample, the word test of one model at
most a few times the perplexity. Wall and CPU seconds are both printed: on a shared, busy machine the wall
times stretch with the load; the ratio of CPU seconds does not.
"""

from __future__ import annotations

import argparse
import time

from _common import report


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_id")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from mlm_tui import word_test
    from mlm_tui.evaluate import perplexity
    from mlm_tui.learned import open_run, word_targets
    from mlm_tui.masking import TokenTables
    from mlm_tui.rundata import fixed_evalset
    from mlm_tui.vocab import Vocabulary

    opened = open_run(args.run_id)
    config, tokenizer, model = opened.config, opened.base.tokenizer, opened.model.model
    evalset = fixed_evalset(opened.chosen.test_chunks, TokenTables.from_tokenizer(tokenizer), config)
    targets = word_targets(opened)
    testset = word_test.build(opened.chosen.test, targets, Vocabulary.of(tokenizer), config.chunk_size,
                              tokenizer.mask_token_id, config.mlm_probability)
    print(f"run {args.run_id}: perplexity on {len(evalset)} test chunks of {config.chunk_size}; word test of "
          f"{len(targets)} words, {testset.occurrences} occurrences in {len(testset.inputs)} chunks of the "
          f"test split ({opened.chosen.test.documents} documents)")
    ppl, words = [], []
    for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits both alike
        ppl.append(timed(lambda: perplexity(model, evalset, 32, opened.device)))
        words.append(timed(lambda: word_test.occurrence_losses(model, testset, 32, opened.device)))
    for k, unit in ((0, "wall s"), (1, "CPU s")):
        report(f"word test vs perplexity, one model ({unit})", min(w[k] for w in words),
               min(p[k] for p in ppl), "s", "at most a few times")


if __name__ == "__main__":
    main()
