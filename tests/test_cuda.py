"""What only a GPU shows: mixed precision training (fp16 with its grad scaler, bf16), packed batches under the
CUDA attention kernels, the CRF, the predictor in half precision, ``--torch_compile`` and ``accelerate launch``.

Every test here is marked ``cuda`` and skips without a CUDA device, so the CPU suite collects and skips
them; the GPU machine runs them with ``pytest -m cuda`` (``bash bench/gpu.sh`` does, as its second step).
They reuse the session's ``tagger`` (a tiny BERT trained on the CPU until it finds nearly every entity of
tests/tagger_data.py's corpus): comparisons of predictions are only telling when a model predicts entities.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast, DataCollatorForTokenClassification

from conftest import REPO, TAGGER_MIN_F1, make_tiny_bert
from batch_helpers import SENTENCES, features
from ner.training.attention import PACKABLE_ATTENTION, SDPA_OR_FLEX
from ner.data.schemes import IGNORE_INDEX

DEVICE = "cuda"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
# The tagger's F1 over 7 training seeds and 4 corpus seeds spans 0.98-1.00 (dev) and 0.94-1.00 (test) (conftest):
# half precision changes the rounding, which moves training about as much as another seed.
F1_TOLERANCE = 0.06
WORD_AGREEMENT = 0.999  # share of words a half-precision predictor must tag as float32 does


def needs_bf16(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")


def to_device(batch: dict) -> dict:
    """Every tensor-like value of a batch (attention masks of any form included) on the GPU."""
    return {key: value.to(DEVICE) if hasattr(value, "to") else value for key, value in batch.items()}


@contextlib.contextmanager
def exact_float32():
    """float32 matrix products in full float32 (no TF32), whatever the code under test chose, for tight comparisons."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def training_run(tagger, out: Path, *extra: str, base: Path | None = None) -> list[str]:
    """run_ner.py arguments for the tagger's corpus on the GPU (tagger_data.training_args less --use_cpu)."""
    from tagger_data import training_args

    argv = training_args(base or tagger.out, tagger.data, out)
    argv.remove("--use_cpu")
    return argv + list(extra)


def short_run(tagger, out: Path, *extra: str) -> list[str]:
    """20 more steps on the trained tagger, at a learning rate that keeps what it learnt (a flag given twice: the
    later wins, so these override the recipe's epochs, learning rate and logging)."""
    return training_run(tagger, out, "--max_steps", "20", "--learning_rate", "1e-4", "--logging_steps", "5", *extra)


# ------------------------------------------------------------------------------------------ mixed precision


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_steps_train(tiny_bert, precision):
    """Optimizer steps under autocast: fp16 through the grad scaler, bf16 without; finite losses that go down."""
    from ner.model.modeling import load_model

    needs_bf16(precision)
    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS).to(DEVICE).train()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    batch = to_device(DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)(features(tokenizer, SENTENCES, len(LABELS))))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler(DEVICE, enabled=precision == "fp16")
    before = [p.detach().clone() for p in model.parameters()]
    losses, finite_steps = [], 0
    for _ in range(12):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=HALF[precision]):
            output = model(**batch)
        assert output.logits.dtype == HALF[precision]  # the matrix products ran in half precision
        assert output.loss.dtype == torch.float32  # the loss is taken in float32
        assert torch.isfinite(output.loss)
        losses.append(output.loss.item())
        scaler.scale(output.loss).backward()
        scaler.unscale_(optimizer)
        # fp16: a step whose gradients overflowed is skipped and the scale lowered; that may happen only at the start.
        finite_steps += all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        scaler.step(optimizer)
        scaler.update()
    assert finite_steps >= 10
    assert losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if precision == "fp16":
        assert 0 < scaler.get_scale() < float("inf")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_tagger_trained_in_half_precision_scores_as_in_float32(tagger, tmp_path, precision):
    """The session tagger's recipe (float32, on the CPU) retrained on the GPU with --fp16 or --bf16 (the Trainer's grad
    scaler for fp16): its dev and test F1 within F1_TOLERANCE of the float32 tagger's, and above TAGGER_MIN_F1."""
    from run_ner import main
    from tagger_data import VOCABULARY

    needs_bf16(precision)
    # The tagger's own starting point: same vocabulary, no dropout, seed 0.
    base = make_tiny_bert(tmp_path / "tiny-bert", extra_words=VOCABULARY, dropout=0.0, seed=0)
    results = main(training_run(tagger, tmp_path / "out", f"--{precision}", base=base))
    assert math.isfinite(results["train_loss"])
    for key in ("eval_f1", "predict_f1"):
        assert results[key] >= TAGGER_MIN_F1, f"{precision}: {key} {results[key]:.4f}"
        assert abs(results[key] - tagger.results[key]) <= F1_TOLERANCE, (
            f"{precision}: {key} {results[key]:.4f} against float32's {tagger.results[key]:.4f}"
        )


# --------------------------------------------------------------------------------------------------- packing


def loss_and_gradients(model, batch: dict, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach().float(), {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}


def packing_case(attention: str) -> tuple[str, str]:
    """The model's attention implementation and the --packed_attention that make the Trainer pack for ``attention``:
    SDPA or eager with a 4D mask, or ``SDPA_OR_FLEX`` (flex attention over a block mask), which the Trainer switches
    an SDPA model to."""
    return ("sdpa", "flex") if attention == SDPA_OR_FLEX else (attention, "mask")


# Each attention implementation packed rows can go through (a 4D mask for those of PACKABLE_ATTENTION, a block mask
# for flex attention), in fp32 and under bf16 autocast; flex attention also with static shapes (--pack_to_length),
# the fast path for torch.compile and CUDA graphs.
ATTENTIONS = tuple(dict.fromkeys((*PACKABLE_ATTENTION, SDPA_OR_FLEX)))
PACKING_CASES = [
    *[(attention, dtype, None) for attention in ATTENTIONS for dtype in ("fp32", "bf16")],
    (SDPA_OR_FLEX, "bf16", 64),
]


@pytest.mark.parametrize("attention, dtype, pack_to_length", PACKING_CASES)
def test_packed_batch_gives_the_padded_loss_and_gradients_on_cuda(tiny_bert, tmp_path, attention, dtype, pack_to_length):
    """The training batch the Trainer packs on the GPU, as it hands it to the model (``_prepare_inputs``: on the device,
    a block mask built there for flex attention), gives the padded batch's loss and gradients: equal in float32,
    within bf16's rounding under bf16 autocast."""
    from ner.model.modeling import load_model
    from ner.training.trainer import NerTrainingArguments, build_trainer

    half = dtype == "bf16"
    if half:
        needs_bf16("bf16")
    start, packed_attention = packing_case(attention)
    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS).to(DEVICE)
    model.set_attn_implementation(start)
    assert model.config._attn_implementation == start
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    args = NerTrainingArguments(
        output_dir=str(tmp_path), report_to="none", eval_strategy="no", bf16=half,
        packed_attention=packed_attention, pack_to_length=pack_to_length,
    )
    batch = features(tokenizer, SENTENCES, len(LABELS))
    trainer = build_trainer(model, args, tokenizer, train_dataset=batch)
    assert trainer.train_collator is not None, f"{attention}: training batches are not packed on {DEVICE}"
    assert model.config._attn_implementation == attention  # what the Trainer trains with
    padded = trainer._prepare_inputs(trainer.data_collator([dict(f) for f in batch]))
    packed = trainer._prepare_inputs(trainer.train_collator([dict(f) for f in batch]))
    assert packed["input_ids"].device.type == DEVICE
    if pack_to_length:
        assert packed["input_ids"].shape[1] == pack_to_length
    assert (packed["labels"] != IGNORE_INDEX).sum() == (padded["labels"] != IGNORE_INDEX).sum()

    model.eval()  # no dropout: the two layouts must then agree
    with exact_float32():
        loss_padded, grads_padded = loss_and_gradients(model, padded, HALF[dtype] if half else torch.float32)
        loss_packed, grads_packed = loss_and_gradients(model, packed, HALF[dtype] if half else torch.float32)
    assert torch.isfinite(loss_packed)
    assert grads_packed.keys() == grads_padded.keys()
    if not half:
        torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-5)
        for name, grad in grads_padded.items():
            torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    else:  # other shapes, so other kernels and summation orders: compare at bf16's precision (8 bits)
        torch.testing.assert_close(loss_packed, loss_padded, rtol=2e-2, atol=1e-3)
        a = torch.cat([grads_packed[name].flatten() for name in grads_padded])
        b = torch.cat([grad.flatten() for grad in grads_padded.values()])
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
        assert a.norm().item() == pytest.approx(b.norm().item(), rel=0.05)


# ------------------------------------------------------------------------------------------- host syncs


@pytest.mark.parametrize("head, packed", [({}, False), ({"use_crf": True}, False), ({"use_crf": True}, True)],
                         ids=["linear", "crf", "packed crf"])
def test_training_step_makes_no_host_sync_in_our_code(tiny_bert, head, packed):
    """A training step's loss, backward and the CRF's tag check wait for the GPU nowhere in ner/ (CUDA's sync debug
    mode warns at each wait, from the Python line that caused it): padded rows, and packed ones read by word_index."""
    import warnings

    from ner.model.modeling import load_model
    from ner.training.packing import PackingCollator

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS, head=head).to(DEVICE).train()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    collator = PackingCollator(tokenizer.pad_token_id, sentences=True) if packed else DataCollatorForTokenClassification(tokenizer)
    batch = to_device(collator(features(tokenizer, SENTENCES, len(LABELS))))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            model(**batch).loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    ours = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if f"{os.sep}ner{os.sep}" in w.filename]
    assert not ours, f"host syncs in ner/: {ours}"


# ------------------------------------------------------------------------------------------------------- CRF


def test_crf_model_trains_in_fp16_and_decodes_as_on_the_cpu(tiny_bert):
    """A CRF head on the GPU: float32 loss and Viterbi paths equal the CPU's; an fp16 step gives a float32 loss and
    finite gradients that reach the transitions."""
    from ner.model.modeling import load_model

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS, head={"use_crf": True}).eval()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    batch = DataCollatorForTokenClassification(tokenizer)(features(tokenizer, SENTENCES, len(LABELS)))
    with torch.no_grad():
        expected = model(**batch)
    model.to(DEVICE)
    with torch.no_grad(), exact_float32():
        output = model(**to_device(batch))
    torch.testing.assert_close(output.loss.cpu(), expected.loss, rtol=1e-4, atol=1e-4)
    assert output.predictions.device.type == "cuda"
    assert output.predictions.cpu().equal(expected.predictions)

    model.train()
    scaler = torch.amp.GradScaler(DEVICE)
    with torch.autocast(DEVICE, dtype=torch.float16):
        loss = model(**to_device(batch)).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    scaler.scale(loss).backward()
    grads = [p.grad for p in model.crf.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------------------------------- predictor


@pytest.fixture(scope="module")
def tagger_sentences(tagger):
    """Every sentence of the tagger's corpus (train, dev, test: about 1,300) with its gold tags."""
    from ner.data.conll import read_conll

    return [s for split in ("train", "dev", "test") for s in read_conll(tagger.data / f"{split}.txt")]


@pytest.fixture(scope="module")
def float32_tags(tagger, tagger_sentences):
    from ner.predict.predictor import NerPredictor

    predictor = NerPredictor(str(tagger.out), device=DEVICE, dtype="float32")
    assert predictor.autocast is None
    return [t.tags for t in predictor.tag([s.words for s in tagger_sentences])]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_predictor_in_half_precision_tags_as_float32(tagger, tagger_sentences, float32_tags, dtype):
    """NerPredictor under fp16/bf16 autocast tags at least 99.9% of words as in float32, and float32 finds the entities."""
    from ner.predict.predictor import NerPredictor
    from ner.training.metrics import entity_scores

    needs_bf16("bf16" if dtype == "bfloat16" else "fp16")
    gold = [s.tags for s in tagger_sentences]
    assert entity_scores(gold, float32_tags, "IOB2")["f1"] >= TAGGER_MIN_F1  # else agreeing on O proves nothing
    predictor = NerPredictor(str(tagger.out), device=DEVICE, dtype=dtype)
    assert predictor.autocast == getattr(torch, dtype)
    half = [t.tags for t in predictor.tag([s.words for s in tagger_sentences])]
    words = sum(len(tags) for tags in float32_tags)
    same = sum(a == b for x, y in zip(float32_tags, half) for a, b in zip(x, y))
    assert same / words >= WORD_AGREEMENT, f"{dtype}: {words - same} of {words} words tagged otherwise than in float32"


def test_predictor_defaults_to_half_precision_on_cuda(tagger):
    from ner.predict.predictor import NerPredictor

    predictor = NerPredictor(str(tagger.out))
    assert predictor.device.type == "cuda"
    assert predictor.autocast == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


# ----------------------------------------------------------------------------------------------- compile


def test_torch_compile_trains_and_scores_as_eager(tagger, tmp_path, monkeypatch):
    """run_ner.py --torch_compile (with --bf16): the Trainer runs the model compiled, which trains to a finite loss
    near the eager run's and scores dev and test as the eager run does."""
    import torch._dynamo
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    import run_ner

    trainers = []
    build_trainer = run_ner.build_trainer

    def kept_trainer(*args, **kwargs):
        trainers.append(build_trainer(*args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(run_ner, "build_trainer", kept_trainer)
    results, graphs = {}, {}
    for name, extra in (("eager", []), ("compiled", ["--torch_compile", "true"])):
        torch._dynamo.reset()
        counters.clear()
        results[name] = run_ner.main(short_run(tagger, tmp_path / name, "--bf16", *extra))
        graphs[name] = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    # Flex attention, when the Trainer picks it, is compiled in the eager run too: what differs is the model.
    assert [isinstance(trainer.model_wrapped, OptimizedModule) for trainer in trainers] == [False, True]
    assert graphs["compiled"] >= 1
    eager, compiled = results["eager"], results["compiled"]
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=0.05, abs=2e-3)
    for key in ("eval_f1", "predict_f1"):
        assert compiled[key] >= TAGGER_MIN_F1
        assert compiled[key] == pytest.approx(eager[key], abs=0.02), key


# -------------------------------------------------------------------------------------------- accelerate

# Runs run_ner.py as `accelerate launch` does, then notes what the process did on the GPU.
RECORDER = """
import json, os, runpy, sys
record, sys.argv = sys.argv[1], sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
try:
    runpy.run_path(sys.argv[0], run_name="__main__")  # ends with sys.exit(status)
finally:
    import torch
    with open(record, "w", encoding="utf-8") as f:
        json.dump({"cuda_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0,
                   "mixed_precision": os.environ.get("ACCELERATE_MIXED_PRECISION"),
                   "local_rank": os.environ.get("LOCAL_RANK")}, f)
"""


def test_accelerate_launch_on_one_gpu(tagger, tmp_path):
    """``accelerate launch --num_processes 1 --mixed_precision fp16 run_ner.py ... --fp16`` as users run it: the run
    finishes, trains on the GPU, and the model still tags the tagger's corpus."""
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "fp16", "--dynamo_backend", "no",
        str(recorder), str(tmp_path / "record.json"), str(REPO / "run_ner.py"), *short_run(tagger, out, "--fp16"),
    ]
    # accelerate reads $HF_HOME/accelerate/default_config.yaml: keep a developer's out.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-5000:]
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["mixed_precision"] == "fp16"
    assert record["cuda_bytes"] > 0  # the model and its batches were on the GPU
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_f1"] >= TAGGER_MIN_F1 and results["predict_f1"] >= TAGGER_MIN_F1


@pytest.mark.parametrize("algorithm", ["scan", "loop"])
def test_packed_crf_on_cuda_gives_the_cpus_padded_loss_and_gradients(tiny_bert, algorithm):
    """The CRF on packed rows on the GPU (the parallel scan it runs by default, and the word loop) against the padded
    batch on the CPU: the same loss and gradients."""
    from test_packing import crf_features

    from ner.model.modeling import load_model
    from ner.training.packing import PackingCollator

    torch.manual_seed(0)
    model = load_model(str(tiny_bert), LABELS, head={"use_crf": True}).eval()
    with torch.no_grad():
        for parameter in model.crf.parameters():
            parameter.normal_(0.0, 2.0)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    batch = crf_features(tokenizer, SENTENCES)
    padded = DataCollatorForTokenClassification(tokenizer)([dict(f) for f in batch])
    packed = to_device(PackingCollator(tokenizer.pad_token_id, sentences=True)([dict(f) for f in batch]))
    results = []
    for inputs, device in ((padded, "cpu"), (packed, DEVICE)):
        model.to(device).zero_grad()
        model.crf.algorithm = algorithm
        loss = model(**inputs).loss
        loss.backward()
        results.append((loss.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-4, atol=1e-4)
    assert grads_gpu.keys() == grads_cpu.keys()
    for name, grad in grads_cpu.items():
        torch.testing.assert_close(grads_gpu[name], grad, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")
