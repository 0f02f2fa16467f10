"""Pushing an output folder to the Hugging Face Hub, without checkpoints and without secrets.

``training_args.bin`` (what the Trainer saves) is a pickle of the whole ``TrainingArguments``,
``hub_token`` included in clear, so it is never uploaded; ``training_args.json`` is its readable,
token-free replacement. TensorBoard logs under ``runs/`` *are* uploaded: the Hub shows them in the
model page's "Training metrics" tab, and what transformers writes there (scalars, and the arguments
as ``to_json_string()``, which masks ``*_token`` values) holds no secret. Before uploading, every
file that would go up is checked for the token string itself, whatever its name.

Files that quote sentences of the evaluation data (``EVAL_TEXT_PATTERNS``: the predictions and the
mistakes in context) stay off the Hub unless ``include_eval_text`` asks for them: dev and test sets are
often not ours to redistribute. The reports (``*_report.md/.json``: scores and confusions, entity types
only) always go up.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import filter_repo_objects

from ner.files import atomic_writer

logger = logging.getLogger(__name__)

# huggingface_hub's glob patterns (fnmatch: "*" also crosses "/"); paths are relative to the folder.
UPLOAD_IGNORE: list[str] = [
    "checkpoint-*",  # intermediate checkpoints: optimizer state, several copies of the weights
    "checkpoint-*/**",
    "training_args.bin",  # pickled TrainingArguments with the raw hub_token
    "**/training_args.bin",
    ".*.tmp",  # half-written files of ner.files.atomic_writer
    "**/.*.tmp",
]
# Files that quote dev/test sentences: word-per-line predictions, and the mistakes in context.
EVAL_TEXT_PATTERNS: list[str] = ["*_predictions.txt", "*_mistakes.md", "*_mistakes.json"]
SECRET_WORDS = ("token", "secret", "password", "key")  # whole words of a setting's name: hub_token, api_key
SCAN_LIMIT_BYTES = 64 * 1024 * 1024  # larger files (weights) are not scanned for the token string


def is_secret_key(key: str) -> bool:
    """True for a setting whose value may be a credential: one of the words of its name (split at ``_``, ``-``
    and ``.``) is token, secret, password or key (``hub_token``, ``api_key``); ``label_all_tokens`` is not."""
    return any(word in SECRET_WORDS for word in re.split(r"[_.\-]", str(key).lower()))


def drop_secrets(value: Any) -> Any:
    """A copy of ``value`` with every dict key that ``is_secret_key`` removed, at any depth.

    Names, not values, decide.
    """
    if isinstance(value, dict):
        return {key: drop_secrets(item) for key, item in value.items() if not is_secret_key(key)}
    if isinstance(value, (list, tuple)):
        return [drop_secrets(item) for item in value]
    return value


def write_training_args_json(training_args: Any, output_dir: str | os.PathLike) -> Path:
    """Write ``training_args.json`` from ``training_args.to_dict()`` with every token-like key removed."""
    path = Path(output_dir) / "training_args.json"
    with atomic_writer(path) as out:
        json.dump(drop_secrets(training_args.to_dict()), out, indent=2, sort_keys=True, default=str)
        out.write("\n")
    return path


def upload_ignore(ignore_patterns: Iterable[str] = (), *, include_eval_text: bool = False) -> list[str]:
    """A new list of what an upload leaves out: ``UPLOAD_IGNORE``, ``EVAL_TEXT_PATTERNS`` unless included, the rest."""
    return UPLOAD_IGNORE + ([] if include_eval_text else EVAL_TEXT_PATTERNS) + list(ignore_patterns)


def files_to_upload(
    output_dir: str | os.PathLike, ignore_patterns: Iterable[str] = (), *, include_eval_text: bool = False
) -> list[str]:
    """The relative paths ``upload_folder`` would send: every file, minus ``upload_ignore(...)``.

    Uses huggingface_hub's own filter, so it is exactly what the client selects (before its default
    ``.git``/``.cache/huggingface`` exclusions, which an output folder does not have).
    """

    folder = Path(output_dir)
    relative = [path.relative_to(folder).as_posix() for path in sorted(folder.glob("**/*")) if path.is_file()]
    ignore = upload_ignore(ignore_patterns, include_eval_text=include_eval_text)
    return list(filter_repo_objects(relative, ignore_patterns=ignore))


def _check_no_token(folder: Path, relative_paths: Sequence[str], token: str) -> None:
    needle = token.encode("utf-8")
    for relative in relative_paths:
        path = folder / relative
        if path.stat().st_size > SCAN_LIMIT_BYTES:
            continue
        if needle in path.read_bytes():
            raise ValueError(
                f"{path} contains the Hub token, so it was not uploaded (nothing was). Delete the file or "
                "remove the token from it, then push again."
            )


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload NER model, model card and reports",
    revision: str | None = None,
    ignore_patterns: Sequence[str] = (),
    include_eval_text: bool = False,
) -> str:
    """Create ``repo_id`` (if needed) and upload ``output_dir`` to it; return the repository URL.

    Checkpoints, ``training_args.bin`` and temporary files are left out (``UPLOAD_IGNORE``), so are the
    files that quote evaluation sentences (``EVAL_TEXT_PATTERNS``) unless ``include_eval_text``, plus any
    ``ignore_patterns`` given. ``token=None`` uses the token ``hf auth login`` stored. ``revision``
    names a branch, created when missing. Raises ``ValueError`` before uploading anything if a file
    that would go up contains ``token``.
    """

    folder = Path(output_dir)
    if not folder.is_dir():
        raise ValueError(f"Cannot push {folder}: no such folder.")
    ignore = upload_ignore(ignore_patterns, include_eval_text=include_eval_text)
    selected = files_to_upload(folder, ignore_patterns, include_eval_text=include_eval_text)
    if not selected:
        raise ValueError(f"Cannot push {folder}: no file left to upload after the ignore patterns {ignore}.")
    secret = token or get_token()  # the one `hf auth login` stored, when none is given
    if secret:
        _check_no_token(folder, selected, secret)
    size = sum((folder / relative).stat().st_size for relative in selected)
    logger.info(
        "Pushing %d files (%.1f MB) from %s to the Hub repository %s", len(selected), size / 1e6, folder, repo_id
    )
    logger.debug("Files to upload: %s", ", ".join(selected))
    if not include_eval_text:
        logger.info(
            "Left out, as they quote evaluation sentences: %s (--push_eval_text uploads them)", EVAL_TEXT_PATTERNS
        )

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    repo_id = getattr(repo_url, "repo_id", None) or repo_id  # the full "owner/name" when given only "name"
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        ignore_patterns=ignore,  # a new list: upload_folder appends its defaults to the list it is given
        commit_message=commit_message,
    )
    logger.info("Pushed to %s", repo_url)
    return str(repo_url)
