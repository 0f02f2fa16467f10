"""A small synthetic CoNLL corpus that a tiny BERT learns to tag in seconds, for tests that need real entities.

Tests that compare predictions (1 process against 2, ``pipeline()`` against our decoding, a reloaded
folder against the run that trained it) can only fail if the model predicts entities: a model that
says ``O`` everywhere gives the same output however the predictions are ordered or decoded.

Which type a name has depends on its context: the same first names are people (``Jordan said``),
places (``in Jordan``) and companies (``Jordan Bank``), and ``Rose`` is also a verb (``shares rose``).
Entities start and end sentences, span one to three words, and surnames and company names are split
into two or three WordPiece pieces (their pieces, not the whole words, are in ``VOCABULARY``).
The text (1,199 training, 41 dev and 61 test sentences, in -DOCSTART- documents of 8) is generated
from a fixed seed, so every session trains on the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

NAMES = "jordan victoria florence chelsea lincoln rose paris sofia omar lena ivan maria".split()
PLACES = "lima oslo cairo quito porto".split()
# Stems and suffixes: "holdberg" is "hold ##berg", "kestanski" is "kest ##an ##ski".
STEMS = "hold kest brom tal zen glo".split()
SURNAME_ENDINGS = ["##berg", "##son", "##ova", "##an ##ski"]
COMPANY_ENDINGS = ["##trix", "##bex", "##o ##tech"]
ORG_WORDS = "bank labs group".split()

# {PER}, {LOC} and {ORG} are entity slots; every other word is O.
TEMPLATES = [
    "{PER} said the deal was good .",
    "according to {PER} , the market fell .",
    "the minister , {PER} , met {PER} in {LOC} .",
    "{ORG} hired {PER} last year .",
    "ms {PER} told reporters in {LOC} that shares of {ORG} rose",
    "police said {PER} was seen near {LOC}",
    "shares of {ORG} rose 3 percent on monday .",
    "{ORG} bought {ORG} for 40 million .",
    "{PER} , chief of {ORG} , said on monday that prices rose .",
    "the team flew from {LOC} to {LOC} .",
    "prices rose in {LOC} after the match .",
    "{LOC}",
    "{ORG} results",
    "the prize went to {PER}",
    "{LOC} is a city of two million people .",
    "mr {PER} joined {ORG} from {ORG} .",
    "{PER} and {PER} will visit {LOC} next week .",
]

WORDS_IN_TEMPLATES = sorted({w for t in TEMPLATES for w in t.split() if not w.startswith("{")})
VOCABULARY = sorted(
    set(WORDS_IN_TEMPLATES + NAMES + PLACES + STEMS + ORG_WORDS + ["port", "san"])
    | {piece for ending in SURNAME_ENDINGS + COMPANY_ENDINGS for piece in ending.split()}
)


def _word(stem: str, ending: str) -> str:
    """The word a stem and its ``##`` pieces spell: ``kest`` + ``##an ##ski`` -> ``kestanski``."""
    return stem + "".join(piece.removeprefix("##") for piece in ending.split())


def _entity(kind: str, rng: random.Random) -> list[str]:
    """The words of one entity of ``kind`` (PER, LOC or ORG): one to three words."""
    surname = _word(rng.choice(STEMS), rng.choice(SURNAME_ENDINGS))
    if kind == "PER":
        return rng.choice([[rng.choice(NAMES)], [rng.choice(NAMES), surname], [surname]])
    if kind == "LOC":
        return rng.choice([[rng.choice(NAMES)], [rng.choice(PLACES)], [rng.choice(["port", "san"]), rng.choice(NAMES)]])
    company = _word(rng.choice(STEMS), rng.choice(COMPANY_ENDINGS))
    return rng.choice([
        [rng.choice(NAMES), rng.choice(ORG_WORDS)],
        [company],
        [surname, rng.choice(ORG_WORDS)],
        [rng.choice(NAMES), surname, "group"],
    ])


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One sentence from a random template, as (word, IOB2 tag) rows."""
    rows: list[tuple[str, str]] = []
    for token in rng.choice(TEMPLATES).split():
        if token.startswith("{"):
            kind = token[1:-1]
            words = _entity(kind, rng)
            rows += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
        else:
            rows.append((token, "O"))
    # Capitalised as in news text; the tiny BERT lowercases, so case gives nothing away.
    return [(w.capitalize() if tag != "O" or i == 0 else w, tag) for i, (w, tag) in enumerate(rows)]


SPLIT_SIZES = {"train": 1199, "dev": 41, "test": 61}  # odd: two ranks get unequal shares
SENTENCES_PER_DOCUMENT = 8


def write_corpus(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``train.txt``, ``dev.txt`` and ``test.txt`` (``word<TAB>tag``, IOB2, -DOCSTART- documents)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, size in SPLIT_SIZES.items():
        rng = random.Random(f"{seed}-{split}")  # one stream per split: resizing one leaves the others as they were
        lines: list[str] = []
        for i in range(size):
            if i % SENTENCES_PER_DOCUMENT == 0:
                lines += ["-DOCSTART-\tO", ""]
            lines += [f"{word}\t{tag}" for word, tag in _sentence(rng)] + [""]
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text("\n".join(lines), encoding="utf-8")
    return paths


def training_args(model: Path, data: Path, out: Path, *, seed: int = 1) -> list[str]:
    """``run_ner.py`` arguments that train the tagger on the corpus in ``data`` (train, dev and test).

    10 epochs of batches of 16 at a learning rate of 1e-2: about 4 s of training on one CPU thread.
    """
    return [
        "--model_name_or_path", str(model),
        "--train_file", str(data / "train.txt"),
        "--validation_file", str(data / "dev.txt"),
        "--test_file", str(data / "test.txt"),
        "--output_dir", str(out),
        "--data_cache_dir", str(out.parent / "cache"),
        "--do_train", "--do_eval", "--do_predict",
        "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "16",
        "--learning_rate", "1e-2",
        "--num_train_epochs", "10",
        "--warmup_ratio", "0.1",
        "--seed", str(seed),
        "--eval_strategy", "no", "--save_strategy", "no",
        "--logging_steps", "25",
        "--report_to", "none",
        "--use_cpu",
        "--dataloader_num_workers", "0",
        "--use_crf", "false",  # the stock-compatible linear head: tests compare it with pipeline()
    ]
