"""A fast tokenizer that lowercases exactly when its vocabulary does, and the checks that go with it.

``load_tokenizer`` loads a Hugging Face tokenizer (or a SentencePiece ``.model``) and applies the casing
guard: several cased models on the Hub ship without a ``tokenizer_config.json``, so ``AutoTokenizer``
lowercases their input and most capitalised words map to [UNK]. The casing rule itself
(``vocabulary_casing``: the share of capitalised word pieces and its threshold; ``name_says_case``) is
shared with the TensorFlow converter, which decides ``do_lower_case`` for the folders it writes.
``check_vocabulary`` refuses a tokenizer with more tokens than the model has embeddings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, TokenizersBackend

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]", "pad_token": "[PAD]", "unk_token": "[UNK]"}
# A vocabulary is cased when more than this share of its alphabetic word pieces start with a capital: an
# uncased vocabulary may still hold a few capitalised pieces (added tokens, stray entries).
CASED_SHARE = 0.01


def vocabulary_casing(tokens: Iterable[str]) -> tuple[bool, float]:
    """(cased, share): the share of alphabetic word pieces that start with a capital, and whether it is over
    ``CASED_SHARE``. WordPiece's ``##`` and SentencePiece's ``\u2581`` markers are removed first."""
    pieces = [token.removeprefix("##").lstrip("\u2581") for token in tokens]
    alphabetic = [piece for piece in pieces if piece[:1].isalpha()]  # [CLS] and the like start with "["
    share = sum(piece[0].isupper() for piece in alphabetic) / len(alphabetic) if alphabetic else 0.0
    return share > CASED_SHARE, share


def name_says_case(names: Iterable[str]) -> str | None:
    """"uncased" or "cased" as the first of ``names`` (folder or model names) that mentions either says; else None."""
    for name in names:
        name = name.lower()
        if "cased" in name:
            return "uncased" if "uncased" in name else "cased"
    return None


def check_vocabulary(tokenizer: Any, vocab_size: int, name: str) -> None:
    """A tokenizer that yields ids past the embedding matrix would crash mid-training; refuse it now."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer of {name} has {len(tokenizer)} tokens but the model's embedding matrix has "
            f"{vocab_size} rows; the vocabulary does not belong to this model (or --tokenizer_name is wrong)."
        )


# What a folder needs for AutoTokenizer to have a vocabulary: without any of these, transformers 5 builds a
# tokenizer of the special tokens alone, which turns every word into [UNK] without a word of warning.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def check_tokenizer_files(folder: str | os.PathLike, shown: str | None = None) -> None:
    """Refuse a local folder with no tokenizer vocabulary (``TOKENIZER_FILES``); a Hub name is left to transformers.
    ``shown``: the name the user gave, for the message (default ``folder``)."""
    path = Path(folder)
    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{shown or folder}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); copy them from the folder the "
            "model was trained from (run_ner.py writes them into every output folder)."
        )


def sentencepiece_tokenizer(model_file: str | os.PathLike) -> Any:
    """A fast tokenizer from a SentencePiece model, with BERT's special tokens (added when missing)."""

    try:
        settings = TokenizersBackend.convert_to_native_format(vocab_file=str(model_file))
    except ImportError as error:
        raise ValueError(f"Reading {model_file} needs `pip install sentencepiece protobuf` ({error}).") from None
    tokenizer = TokenizersBackend(**settings)
    vocab = tokenizer.get_vocab()
    present = {role: token for role, token in SPECIAL_TOKENS.items() if token in vocab}
    if "unk_token" not in present and tokenizer.unk_token:
        present["unk_token"] = tokenizer.unk_token  # SentencePiece's own <unk>
    missing = {role: token for role, token in SPECIAL_TOKENS.items() if role not in present}
    tokenizer.add_special_tokens({**present, **missing})
    if missing:
        logger.info("%s: added %s (not in the SentencePiece vocabulary).", model_file, " ".join(missing.values()))
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)],
    )
    return tokenizer


def _lowercases(tokenizer: Any) -> bool:
    """Whether the fast tokenizer's normalizer lowercases its input."""

    def search(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Lowercase" or node.get("lowercase") is True:
                return True
            return any(search(value) for value in node.values())
        if isinstance(node, list):
            return any(search(value) for value in node)
        return False

    return search(json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer"))


def load_tokenizer(
    name_or_path: str, *, do_lower_case: bool | None = None, user_name: str | None = None, **hub_kwargs: Any
) -> Any:
    """A fast tokenizer whose lowercasing matches its vocabulary (or ``do_lower_case`` when given).

    ``user_name`` is the name the user gave (``ModelSource.user_name`` for a staged folder, whose own name
    is a hash), which the "name says cased" rule and the messages use; by default ``name_or_path``.
    """

    shown = user_name or str(name_or_path)

    if str(name_or_path).endswith(".model") and os.path.isfile(name_or_path):
        tokenizer = sentencepiece_tokenizer(name_or_path)
        rebuild = None
    elif os.path.isfile(name_or_path):
        raise ValueError(
            f"{shown}: a file that is not a SentencePiece .model; give the tokenizer's folder (tokenizer.json or "
            "vocab.txt in it) or a .model file."
        )
    else:
        check_tokenizer_files(name_or_path, shown)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, **hub_kwargs)
        rebuild = lambda lower: AutoTokenizer.from_pretrained(name_or_path, use_fast=True, do_lower_case=lower, **hub_kwargs)  # noqa: E731
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer  # the caller refuses slow tokenizers with its own message
    lowercases = _lowercases(tokenizer)
    wanted = do_lower_case
    if wanted is None:
        cased_vocab, share = vocabulary_casing(tokenizer.get_vocab())
        cased_name = name_says_case([Path(shown).name]) == "cased"
        if lowercases and (cased_vocab or cased_name):
            wanted = False
            logger.warning(
                "%s: the tokenizer lowercases, but the vocabulary is cased (%.0f%% of word pieces capitalised%s); "
                "lowercasing turned off. Pass --do_lower_case true to keep it.",
                shown, 100 * share, ", and the name says cased" if cased_name else "",
            )
        elif not lowercases and share == 0.0 and not cased_name:
            wanted = True
            logger.warning(
                "%s: the tokenizer keeps case, but the vocabulary has no capitalised pieces; lowercasing turned on "
                "(else capitalised words become [UNK]). Pass --do_lower_case false to keep case.",
                shown,
            )
    if wanted is not None and wanted != lowercases:
        if rebuild is None:
            raise ValueError(f"--do_lower_case applies to WordPiece (vocab.txt) tokenizers, not to {shown}.")
        tokenizer = rebuild(wanted)
        if _lowercases(tokenizer) != wanted:
            raise ValueError(f"The tokenizer of {shown} does not support do_lower_case={wanted}.")
    return tokenizer
