"""Model cards, export and upload of a run's final model.

The card is written with `huggingface_hub`'s `ModelCard`/`ModelCardData`, so the Hub reads its metadata
(base model, tags, datasets, the perplexity as a `model-index` result) and the YAML is dumped by a YAML
library: a corpus or model name from data cannot break the front matter. The body quotes such names with
`printable`, so a control character in them shows as an escape in the Markdown too. Everything comes from
the run store, so a card can be written for any completed run, also one trained before cards existed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mlm_tui import atomic
from mlm_tui.errors import MlmError, UsageError, first_line
from mlm_tui.progress import format_figure
from mlm_tui.run_settings import changed_settings, train_argv
from mlm_tui.runstore import Run, RunInfo
from mlm_tui.textsafe import printable, shell_quote

CARD_NAME = "README.md"
TAGS = ["fill-mask", "domain-adaptation", "mlm-tui"]


def _hub_model(ref: str | None) -> str | None:
    """The hub id a run started from, or None for a folder, a run or `starter` (no Hub page to link)."""
    from mlm_tui.models import DEFAULT_MODEL, resolve

    if not ref or ref == DEFAULT_MODEL:  # resolving it could assemble the starter, to no purpose here
        return None

    try:
        resolved = resolve(ref)
    except MlmError:
        return None
    return resolved.hub_id if resolved.kind == "hub" else None


def _hub_dataset(corpus: str | None) -> str | None:
    from mlm_tui.corpus import corpus_files

    if not corpus:
        return None
    try:
        return corpus if corpus_files(corpus) is None else None
    except MlmError:
        return None


def build_card(info: RunInfo) -> Any:
    """The model card of a completed run, as a `huggingface_hub.ModelCard`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if info.config is None or info.perplexity_after is None:
        raise UsageError(f"run {info.run_id} has no final results to describe (status: {info.status})")
    cfg = info.config
    base, dataset = _hub_model(cfg.model), _hub_dataset(cfg.corpus)
    corpus = info.corpus or cfg.corpus  # as the user gave it
    results = [EvalResult(task_type="fill-mask", task_name="Masked language modeling",
                          dataset_type=dataset or "local", dataset_name=corpus, dataset_split="test",
                          metric_type="perplexity", metric_name="Perplexity (test split)",
                          metric_value=round(info.perplexity_after, 4))]
    data = ModelCardData(base_model=base, tags=TAGS, datasets=[dataset] if dataset else None,
                         library_name="transformers", pipeline_tag="fill-mask",
                         model_name=f"mlm-tui run {info.run_id}", eval_results=results)
    before = info.perplexity_before
    change = f" ({(info.perplexity_after / before - 1) * 100:+.1f}%)" if before else ""
    settings = changed_settings(cfg).items()
    command = " ".join(["mlm-tui", *(shell_quote(arg) for arg in train_argv(cfg))])
    versions = info.versions or {}
    lines = [
        f"# mlm-tui run {info.run_id}", "",
        f"`{printable(cfg.model)}` adapted to the corpus `{printable(corpus)}` by masked-language-model "
        f"fine-tuning with mlm-tui ({info.step} steps, "
        f"{cfg.chunk_size}-token chunks, {cfg.mlm_probability:.0%} masking"
        f"{', whole words' if cfg.whole_word_mask else ''}).", "",
        "## Results", "",
        "Masked-LM perplexity on the held-out test split (the same chunks, masked once with a fixed seed):",
        "",
        "| before | after |", "|---|---|",
        f"| {format_figure(before)} | {format_figure(info.perplexity_after)}{change} |", "",
        *_general_lines(info),
        *_bpc_lines(info),
        "## Settings", "",
        *(f"- `{name}`: `{printable(value)}`" for name, value in settings),
        *([] if settings else ["defaults"]),
        *([f"- learning rate {info.learning_rate:.2e}, {info.learning_rate_reason}"]
          if info.learning_rate is not None and info.learning_rate_reason != "given" else []),
        "", "## Reproduce", "", "```", command, "```", "",
        "## Libraries", "",
        *(f"- {name} {printable(v)}" for name, v in versions.items() if v),
    ]
    template = "---\n{{ card_data }}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard.from_template(data, template_str=template)


def _general_lines(info: RunInfo) -> list[str]:
    """What the run cost on general text (`rundata`), when it measured that."""
    from mlm_tui.rundata import general_name

    after = info.general_perplexity_after
    name = general_name(info.config) if info.config is not None else None
    if after is None or name is None:
        return []
    before = info.general_perplexity_before
    change = f" ({(after / before - 1) * 100:+.1f}%)" if before else ""
    return [f"Perplexity on general text ({printable(name)}), what the adaptation cost:", "",
            "| before | after |", "|---|---|",
            f"| {format_figure(before)} | {format_figure(after)}{change} |", ""]


def _bpc_lines(info: RunInfo) -> list[str]:
    """Bits per character before and after (`bpc`), when the run measured them."""
    if info.bpc_after is None:
        return []
    before = info.bpc_before
    change = f" ({(info.bpc_after / before - 1) * 100:+.1f}%)" if before else ""
    return [f"Bits per character (PLL-word-l2r) on the first {info.bpc_characters or 0:,} characters of the "
            "test split, the base model with its own tokenizer against this one with its own: they compare "
            "across vocabularies, where perplexities do not:", "",
            "| before | after |", "|---|---|",
            f"| {format_figure(before, 3)} | {format_figure(info.bpc_after, 3)}{change} |", ""]


def write_card(run: Run, folder: Path | None = None) -> Path:
    """Write the run's card into its final model folder (or `folder`, a copy of it); return its path."""
    path = (folder or run.model_path) / CARD_NAME
    atomic.write_bytes(path, str(build_card(run.info())).encode())
    return path


def final_model(run: Run) -> Path:
    """The run's final model folder, checked to load (its weights present and whole), its card written if
    it has none (a run from before cards existed)."""
    from mlm_tui.models import check_model_dir, damage_advice, damaged_weights

    info = run.info()
    if info.model_path is None:
        raise UsageError(f"run {run.run_id} has no final model (status: {info.status}); only completed runs "
                         "can be exported or pushed")
    try:
        check_model_dir(info.model_path, allow_pickle=True)  # present; its format is not loaded here
    except MlmError as exc:
        raise MlmError(f"the final model of run {run.run_id} would not load: {exc}") from None
    damaged = damaged_weights(info.model_path)
    if damaged is not None:
        raise MlmError(f"the final model of run {run.run_id} would not load: {damaged} is truncated or not "
                       f"safetensors; {damage_advice(info.model_path)}")
    if not (info.model_path / CARD_NAME).is_file():
        write_card(run)
    return info.model_path


def export(run: Run, dest: Path) -> Path:
    """Copy the final model (weights, tokenizer, card) to `dest`, a new or empty folder outside it."""
    source = final_model(run)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} already exists and is not an empty folder")
    inside = Path(os.path.realpath(dest))
    if inside == source.resolve() or source.resolve() in inside.parents:
        raise UsageError(f"{dest} is inside the run's own model folder ({source}): export to a folder "
                         "outside it")
    tmp = dest.with_name(f".{dest.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp)
        atomic.settle_modes(tmp)  # a run from before finished files took the umask has private weights
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MlmError(f"could not export to {dest} ({_why(exc)})") from None
    return dest


def _why(exc: OSError) -> str:
    """An OSError's reason in words; `copytree` gathers its failures into one error holding a list of
    (source, destination, reason) tuples: the first reason."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        return str(exc.args[0][0][-1])
    return str(exc.strerror or exc)


def check_push() -> str:
    """The Hub token to upload with, or one line saying why an upload cannot start now."""
    from mlm_tui import hub
    from mlm_tui.home import configure_hf_environment

    configure_hf_environment()
    if hub.offline_requested():
        raise UsageError("cannot push: HF_HUB_OFFLINE is set (unset it to upload)")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UsageError("cannot push: no Hugging Face token (run `hf auth login` or set HF_TOKEN)")
    why = hub.unavailable_reason()
    if why is not None:
        raise UsageError(f"cannot push: {why}")
    return token


def push(run: Run, repo_id: str, private: bool = False) -> str:
    """Upload the final model folder to a model repository on the Hub (created if needed); its URL."""
    folder = final_model(run)
    token = check_push()
    from huggingface_hub import create_repo, upload_folder

    try:
        repo = create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
        upload_folder(repo_id=repo.repo_id, folder_path=folder, token=token,
                      commit_message=f"mlm-tui run {run.run_id}")
    except Exception as exc:  # HTTP errors, a bad repo id, no write access: one line either way
        raise MlmError(f"could not push to {repo_id}: {first_line(exc)}") from None
    return str(repo)

