"""Staging a BERT from whatever layout it was released in as a Hugging Face folder ``from_pretrained`` loads.

``prepare_model_source`` turns ``--model_name_or_path`` (plus ``--config_name``/``--tokenizer_name``)
into something ``from_pretrained`` loads: a Hub name or Hugging Face folder is used as is; an
original-release folder (``bert_config.json``, ``vocab.txt``, ``pytorch_model.bin`` or
``model.safetensors``, or SciBERT's ``weights.tar.gz``), a release archive (SciBERT's
``scibert_scivocab_cased.tar``, holding that folder), a bare weights file, or a TensorFlow
checkpoint is staged once into a Hugging Face folder under the cache (``config.json``,
``model.safetensors``, tokenizer files), each weight's shape checked against the config on the way
(the tokenizer against the embedding matrix is ``ner.sources.tokenizer.check_vocabulary``'s check). Staging
holds a file lock, so processes that start together stage a model once, and the staged folder gets the
permissions of an ordinary ``mkdir``.

``find_release_files`` is the one place that knows a release folder's file names (config, vocabulary,
weights, TF checkpoint); ``convert_tf_to_pytorch.py`` finds a release's files through it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
import torch
from transformers import BertConfig, BertModel

from ner.files import new_work_folder, readable_as_umask_allows
from ner.sources import tf_conversion
from ner.sources.tf_checkpoint import checkpoint_prefix, checkpoints_in
from ner.sources.tokenizer import TOKENIZER_FILES

logger = logging.getLogger(__name__)

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
RELEASE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILES = ("bert_config.json", "config.json")  # a release's own file first
TOKENIZER_SETTINGS = ("tokenizer_config.json", "special_tokens_map.json")  # staged with the vocabulary
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass
class ModelSource:
    """What to pass to ``from_pretrained``: ``model`` and ``tokenizer`` paths or Hub names.

    ``user_name`` is ``--model_name_or_path`` as given, for messages and the casing guard's name rule.
    """

    model: str
    tokenizer: str
    config: str | None = None
    staged: bool = False
    user_name: str | None = None


def default_cache_dir() -> Path:
    base = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(base) / "ner-prepared"


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


@dataclass(frozen=True)
class ReleaseFiles:
    """The files of a model folder by role, as releases name them; None where the folder holds none."""

    folder: Path
    config: Path | None  # bert_config.json or config.json
    tokenizer: Path | None  # the first of TOKENIZER_FILES: what a staged folder's tokenizer is built from
    vocab: Path | None  # vocab.txt: the WordPiece vocabulary a TensorFlow release comes with
    weights: Path | None  # model.safetensors or pytorch_model.bin
    archive: Path | None  # weights.tar.gz (SciBERT), holding the config and the weights
    tf_checkpoints: tuple[Path, ...]  # checkpoint prefixes (the newest alone when TF's `checkpoint` file names it)

    @property
    def found(self) -> str:
        """What the folder holds, for messages."""
        return ", ".join(sorted(path.name for path in self.folder.iterdir())) or "nothing"

    def tf_prefix(self, flag: str) -> Path | None:
        """The one TensorFlow checkpoint's prefix, or None; several to choose from name ``flag`` as the fix."""
        if len(self.tf_checkpoints) > 1:
            raise ValueError(
                f"{self.folder} holds several TensorFlow checkpoints "
                f"({', '.join(f'{prefix.name}.index' for prefix in self.tf_checkpoints)}); pass the one you mean as "
                f"{flag} FOLDER/PREFIX (e.g. model.ckpt-1000000)."
            )
        return self.tf_checkpoints[0] if self.tf_checkpoints else None


def find_release_files(folder: Path) -> ReleaseFiles:
    """The config, vocabulary, weights, weights archive and TensorFlow checkpoints ``folder`` holds."""
    archive = folder / "weights.tar.gz"
    return ReleaseFiles(
        folder,
        config=_find(folder, CONFIG_FILES),
        tokenizer=_find(folder, TOKENIZER_FILES),
        vocab=_find(folder, ("vocab.txt",)),
        weights=_find(folder, RELEASE_WEIGHTS),
        archive=archive if archive.is_file() else None,
        tf_checkpoints=tuple(checkpoints_in(folder)),
    )


def _fingerprint(*paths: Path | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            stat = path.stat()
            digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def looks_like_path(name: str) -> bool:
    """True for a name that can only be a local path (``./x``, ``/x``, ``~/x``, ``a/b/c``), never a Hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_model_path(flag: str, name: str | None) -> None:
    """Refuse a ``--config_name``/``--tokenizer_name``/``--model`` that names a missing local path (transformers
    would read it as a malformed Hub id), or an empty file."""
    if not name:
        return
    if not os.path.exists(name):
        if looks_like_path(name):
            raise ValueError(f"{flag} {name}: no such file or folder.")
    elif os.path.isfile(name) and os.path.getsize(name) == 0:
        raise ValueError(f"{flag} {name}: an empty file.")


def prepare_model_source(
    model_name_or_path: str,
    *,
    config_name: str | None = None,
    tokenizer_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Resolve the model, config and tokenizer arguments to loadable paths, staging if needed."""
    path = Path(model_name_or_path)
    tokenizer = tokenizer_name or model_name_or_path
    if not path.exists() and checkpoint_prefix(path) is None:
        if looks_like_path(model_name_or_path):
            raise ValueError(f"--model_name_or_path {model_name_or_path}: no such file or folder.")
        return ModelSource(model_name_or_path, tokenizer, config_name, user_name=model_name_or_path)  # a Hub name
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and (path / "config.json").is_file() and _find(path, HF_WEIGHTS) and config_name is None:
        check_weights_files(path, model_name_or_path)
        return ModelSource(str(path), tokenizer, None, user_name=model_name_or_path)  # a Hugging Face folder
    files = find_release_files(folder)
    config = Path(config_name) if config_name else files.config
    vocab = None if tokenizer_name else files.tokenizer
    tf_prefix = checkpoint_prefix(path) if not path.is_dir() else None
    weights: Path | None = None
    archive: Path | None = None
    if tf_prefix is None and path.is_dir():
        weights, archive = files.weights, files.archive
        if weights is None and archive is None:
            tf_prefix = files.tf_prefix("--model_name_or_path")
    elif tf_prefix is None:
        if path.name.endswith(ARCHIVE_SUFFIXES):
            archive = path  # weights.tar.gz, or a whole release folder packed (scibert_scivocab_cased.tar)
        elif path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            weights = path
        else:
            raise ValueError(
                f"{path}: not a weights file (.safetensors, .bin), a release archive (.tar, .tar.gz), or a "
                "TensorFlow checkpoint prefix."
            )
    if weights is None and archive is None and tf_prefix is None:
        raise ValueError(
            f"{folder}: no model weights found (found: {files.found}). Expected model.safetensors or pytorch_model.bin "
            "with config.json or bert_config.json, a weights.tar.gz holding them, or a TensorFlow checkpoint "
            "(model.ckpt.index + .data-*)."
        )
    settings = [vocab.parent / name for name in TOKENIZER_SETTINGS if (vocab.parent / name).is_file()] if vocab else []
    staging_root = Path(cache_dir) if cache_dir else default_cache_dir()
    tf_index = Path(f"{tf_prefix}.index") if tf_prefix else None
    target = staging_root / _fingerprint(config, vocab, *settings, weights, archive, tf_index)
    staging_root.mkdir(parents=True, exist_ok=True)
    # Processes started together (torchrun, two jobs on one cache) would otherwise stage the same folder
    # at once, and one could delete the folder the other is loading.
    with FileLock(str(staging_root / f"{target.name}.lock")):
        if not (target / "config.json").is_file():
            _stage(target, config=config, config_given=config_name is not None, vocab=vocab,
                   want_vocab=tokenizer_name is None, weights=weights, archive=archive, tf_prefix=tf_prefix)
            logger.info("Prepared %s as a Hugging Face folder in %s", model_name_or_path, target)
        else:
            logger.info("Using %s, prepared earlier from %s", target, model_name_or_path)
    return ModelSource(str(target), tokenizer_name or str(target), None, staged=True, user_name=model_name_or_path)


def _stage(
    target: Path,
    *,
    config: Path | None,
    config_given: bool,
    vocab: Path | None,
    want_vocab: bool,
    weights: Path | None,
    archive: Path | None,
    tf_prefix: Path | None,
) -> None:
    """Write config.json, model.safetensors and the tokenizer files into ``target``, atomically.

    In an archive, its own config and vocabulary come before ones lying beside it; ``--config_name``
    before both.
    """
    work = new_work_folder(target.parent, target.name)
    try:
        if tf_prefix is not None:
            _convert_tf(tf_prefix, config, vocab, work)
        else:
            if archive is not None:
                found = _unpack(archive, work / "unpacked")
                weights = found["weights"]
                config = config if config_given else (found.get("config") or config)
                vocab = (found.get("vocab") or vocab) if want_vocab else None
            if config is None:
                raise ValueError(
                    f"No bert_config.json or config.json beside {weights}; pass --config_name path/bert_config.json."
                )
            state = load_state_dict(weights)
            model_config = _write_config(config, work)
            check_shapes(state, model_config, weights, config)
            state = drop_shared_duplicates(state, weights)

            save_file({key: tensor.contiguous() for key, tensor in state.items()}, work / "model.safetensors", metadata={"format": "pt"})
            readable_as_umask_allows(work / "model.safetensors")
            if vocab is not None:
                shutil.copy(vocab, work / vocab.name)
                for name in TOKENIZER_SETTINGS:
                    if (vocab.parent / name).is_file():
                        shutil.copy(vocab.parent / name, work / name)
        shutil.rmtree(work / "unpacked", ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)  # a half-written folder from before; staging holds the lock
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _convert_tf(prefix: Path, config: Path | None, vocab: Path | None, work: Path) -> None:
    tf_conversion.convert_for_loading(prefix, config, vocab, work)


def _extract(archive: Path, destination: Path, shown: str) -> dict[str, Path]:
    """Extract ``archive`` with no path escaping ``destination``; its files by name (each name once)."""
    destination.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ValueError(
            f"{shown}: cannot unpack ({error}); expected a .tar or .tar.gz holding bert_config.json and "
            "pytorch_model.bin (or a release folder with them, or with a weights.tar.gz holding them)."
        ) from None
    files: dict[str, Path] = {}
    for path in sorted(destination.rglob("*")):
        if not path.is_file() or path.name.startswith("._"):  # ._*: macOS tar's resource forks
            continue
        if path.name in files and path.name in (*RELEASE_WEIGHTS, *CONFIG_FILES, *TOKENIZER_FILES, "weights.tar.gz"):
            first, second = (p.relative_to(destination) for p in (files[path.name], path))
            raise ValueError(
                f"{shown} holds two {path.name} ({first} and {second}); unpack it and pass the folder of the model "
                "you mean as --model_name_or_path."
            )
        files.setdefault(path.name, path)
    return files


def _unpack(archive: Path, destination: Path) -> dict[str, Path]:
    """Weights, config and vocabulary from a release archive: SciBERT's weights.tar.gz (config and
    weights), or its outer .tar (a folder with vocab.txt and that weights.tar.gz), unpacked in turn."""
    files = _extract(archive, destination, str(archive))
    if not any(name in files for name in RELEASE_WEIGHTS) and "weights.tar.gz" in files:
        inner = files["weights.tar.gz"]
        shown = f"{archive} ({inner.relative_to(destination)})"
        files = {**_extract(inner, destination / ".weights", shown), **files}
    weights = next((files[name] for name in RELEASE_WEIGHTS if name in files), None)
    if weights is None:
        found = ", ".join(sorted(files)) or "nothing"
        raise ValueError(
            f"{archive} holds {found}; expected pytorch_model.bin or model.safetensors in it (or in a "
            "weights.tar.gz in it)."
        )
    found = {"weights": weights}
    config = next((files[name] for name in CONFIG_FILES if name in files), None)
    vocab = next((files[name] for name in TOKENIZER_FILES if name in files), None)
    found.update({key: value for key, value in (("config", config), ("vocab", vocab)) if value is not None})
    return found


def check_weights_files(folder: str | os.PathLike, shown: str | None = None) -> None:
    """Refuse a local folder whose ``*.safetensors`` weights cannot be read (a copy cut short, a damaged file), with
    one line naming the file, before transformers reads it; ``shown``: the name the user gave for the folder."""

    path = Path(folder)
    if not path.is_dir():
        return
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(weights, framework="pt"):
                pass
        except SafetensorError as error:
            name = Path(shown) / weights.name if shown else weights
            raise ValueError(
                f"{name}: not a readable safetensors file ({error}): it was cut short or damaged; copy it again "
                "from where it came from (or train again)."
            ) from None


def load_state_dict(path: Path) -> dict[str, Any]:
    """Weights from safetensors, or from a PyTorch pickle with ``weights_only=True`` (no code runs)."""

    if path.suffix == ".safetensors":

        try:
            state = load_file(path)
        except SafetensorError as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error}): it was cut short or damaged.") from None
    else:
        logger.warning(
            "%s is a pickle; reading it with weights_only=True (tensors only, no code runs). Prefer safetensors: "
            "the staged copy is written as model.safetensors.",
            path,
        )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable PyTorch weights file ({type(error).__name__}: {error}).") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}.")
    renamed = {}
    for key, tensor in state.items():
        # pytorch-pretrained-bert (2018-19 releases such as SciBERT's) named LayerNorm parameters gamma/beta.
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        renamed[key] = tensor
    return renamed


def drop_shared_duplicates(state: dict[str, Any], source: Path) -> dict[str, Any]:
    """The state with one tensor per storage, since safetensors refuses tensors that share memory.

    pytorch-pretrained-bert saved ``BertForPreTraining`` with the MLM decoder's weight being the word
    embeddings themselves (SciBERT's weights.tar.gz, BioBERT's PyTorch ports). A pre-training head's name
    that is the very same tensor as another weight is dropped (transformers ties it again on loading);
    any other overlap is copied apart.
    """
    by_storage: dict[tuple[str, int], list[str]] = {}
    for key, tensor in state.items():
        if hasattr(tensor, "untyped_storage") and tensor.numel():
            by_storage.setdefault((str(tensor.device), tensor.untyped_storage().data_ptr()), []).append(key)
    result = dict(state)
    for keys in by_storage.values():
        if len(keys) < 2:
            continue
        keep, *others = sorted(keys, key=lambda key: (key.startswith("cls."), key))
        kept = state[keep]
        for key in others:
            tensor = state[key]
            same = (tensor.dtype, tensor.shape, tensor.stride(), tensor.storage_offset()) == (
                kept.dtype, kept.shape, kept.stride(), kept.storage_offset()
            )
            if same and key.startswith("cls."):
                del result[key]
                logger.info(
                    "%s: dropped %s, which is %s itself (a tied weight; transformers ties it again when loading).",
                    source, key, keep,
                )
            else:
                result[key] = tensor.clone()
                logger.info("%s: %s shares memory with %s; staged as a copy of its own.", source, key, keep)
    return result


def _write_config(config_path: Path, work: Path):

    try:
        settings = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path}: not a readable JSON config ({error}).") from None
    model_type = settings.pop("model_type", "bert")
    if model_type not in ("bert", "ner_bert"):
        raise ValueError(f"{config_path}: model_type {model_type!r}; this toolkit fine-tunes BERT-family encoders.")
    config = BertConfig(**settings)
    config.save_pretrained(work)
    return config


def check_shapes(state: dict[str, Any], config, weights: Path, config_path: Path) -> None:
    """Every encoder weight must have the shape the config implies; name both files when not."""

    with torch.device("meta"):
        reference = BertModel(config, add_pooling_layer=True).state_dict()
    found = {key.removeprefix("bert."): tensor for key, tensor in state.items()}
    matched = 0
    for key, tensor in reference.items():
        if key in found:
            matched += 1
            if tuple(found[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{weights}: {key} has shape {tuple(found[key].shape)}, but {config_path} implies "
                    f"{tuple(tensor.shape)}; the config does not belong to these weights."
                )
    if matched == 0:
        sample = ", ".join(list(state)[:5])
        raise ValueError(f"{weights}: no BERT encoder weights found (names such as {sample}); is this a BERT checkpoint?")
