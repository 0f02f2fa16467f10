"""Write the small TensorFlow checkpoints under tests/fixtures/tf/ (run by hand, once; CI never runs it).

It needs TensorFlow, which the project does not depend on; use a throwaway environment:

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfenv/bin/python tests/make_tf_fixtures.py            # rewrites tests/fixtures/tf/

Every checkpoint is written by TensorFlow itself (``tf.compat.v1.train.Saver`` in graph mode, or
``tf.train.Checkpoint``), with the variable names of Google's BERT (``modeling.py``):

- ``uncased_L-2_H-8_A-2/bert_model.ckpt``: a pre-trained BERT (encoder, pooler, MLM and NSP heads) with
  ``adam_m``/``adam_v`` slots of Google's ``AdamWeightDecayOptimizer`` and ``global_step``; uncased vocabulary.
- ``biobert_v1.0_pubmed_pmc/biobert_model.ckpt``: the same weights with BioBERT v1.0's ``BERTAdam``/``BERTAdam_1``
  slots; cased vocabulary.
- ``finetuned_ner/model.ckpt-1200``: an encoder fine-tuned by BioBERT's ``run_ner`` (no ``cls/`` heads, a
  classifier ``output_weights``/``output_bias``), with ``LAMB``/``LAMB_1`` slots and ``beta1_power``/``beta2_power``.
- ``tf2_bert/ckpt-1``: the same weights in an object-based (TF2) ``tf.train.Checkpoint``, with optimizer slots.
- ``tf2_keras/ckpt-1``: an object-based checkpoint whose variables are not named like Google's BERT.
- ``many_variables/model.ckpt``: for the reader alone: two ``.data`` shards, an ``.index`` of two table blocks
  (TensorFlow starts a block every 256 KiB, hence the long names), every dtype the reader knows, a string
  variable, an empty tensor and a partitioned variable; ``listing.json`` is ``tf.train.list_variables``.

``expected_outputs.npz`` holds inputs and what TensorFlow computes from the saved variables with BERT's
forward pass (hidden states, MLM/NSP logits, token-classifier logits): the converted models must match it.
The forward pass uses exact (erf) GELU, which is what ``"hidden_act": "gelu"`` means in transformers; Google's
code used the tanh approximation, a difference below 1e-3 that does not concern the weight conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "fixtures" / "tf"

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 8,
    "initializer_range": 0.02,
    "intermediate_size": 16,
    "max_position_embeddings": 16,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "type_vocab_size": 2,
    "vocab_size": 64,
}
NUM_NER_LABELS = 5
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNCASED_VOCAB = SPECIAL + list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + [
    "the", "gene", "protein", "cell", "##ing", "##1", "of"
]
CASED_VOCAB = SPECIAL + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + list("abcdefghijklmnopqrstuvwxyz") + [
    "##s", "##e", "##1", "The", "BRCA", "gene", "of"
]
INPUT_IDS = [[2, 31, 12, 40, 3, 8, 3], [2, 58, 59, 25, 3, 0, 0]]
TOKEN_TYPE_IDS = [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]]
ATTENTION_MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]]

# Reader fixture: names long enough that the .index needs two 256 KiB table blocks.
MANY_COUNT = 1250
STRING_VALUES = ["alpha", "\u03b2eta", "", "a longer string with spaces"]
PARTITIONED_SHAPE = (6, 2)


def many_name(i: int) -> str:
    return f"many/v{i:04d}/" + "padding_" * 24 + "kernel"


def reference_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random BERT weights under Google's TF names (kernels stored [in, out], as TF does)."""
    rng = np.random.default_rng(seed)
    h, i, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    weights = {
        "bert/embeddings/word_embeddings": normal(v, h),
        "bert/embeddings/token_type_embeddings": normal(CONFIG["type_vocab_size"], h),
        "bert/embeddings/position_embeddings": normal(CONFIG["max_position_embeddings"], h),
        "bert/embeddings/LayerNorm/gamma": 1 + normal(h) / 5,
        "bert/embeddings/LayerNorm/beta": normal(h) / 5,
    }
    for n in range(CONFIG["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{n}"
        for part in ("query", "key", "value"):
            weights[f"{layer}/attention/self/{part}/kernel"] = normal(h, h)
            weights[f"{layer}/attention/self/{part}/bias"] = normal(h) / 5
        weights[f"{layer}/attention/output/dense/kernel"] = normal(h, h)
        weights[f"{layer}/attention/output/dense/bias"] = normal(h) / 5
        weights[f"{layer}/attention/output/LayerNorm/gamma"] = 1 + normal(h) / 5
        weights[f"{layer}/attention/output/LayerNorm/beta"] = normal(h) / 5
        weights[f"{layer}/intermediate/dense/kernel"] = normal(h, i)
        weights[f"{layer}/intermediate/dense/bias"] = normal(i) / 5
        weights[f"{layer}/output/dense/kernel"] = normal(i, h)
        weights[f"{layer}/output/dense/bias"] = normal(h) / 5
        weights[f"{layer}/output/LayerNorm/gamma"] = 1 + normal(h) / 5
        weights[f"{layer}/output/LayerNorm/beta"] = normal(h) / 5
    weights.update({
        "bert/pooler/dense/kernel": normal(h, h),
        "bert/pooler/dense/bias": normal(h) / 5,
        "cls/predictions/transform/dense/kernel": normal(h, h),
        "cls/predictions/transform/dense/bias": normal(h) / 5,
        "cls/predictions/transform/LayerNorm/gamma": 1 + normal(h) / 5,
        "cls/predictions/transform/LayerNorm/beta": normal(h) / 5,
        "cls/predictions/output_bias": normal(v) / 5,
        "cls/seq_relationship/output_weights": normal(2, h),  # [out, in]: no transpose in modeling.py
        "cls/seq_relationship/output_bias": normal(2) / 5,
        "output_weights": normal(NUM_NER_LABELS, h),  # run_ner/run_classifier: [num_labels, hidden]
        "output_bias": normal(NUM_NER_LABELS) / 5,
    })
    return weights


def bert_forward(tf, w: dict, input_ids, token_type_ids, attention_mask) -> dict:
    """Google BERT's forward pass (modeling.py), written with TF ops over the variables ``w``."""
    h, heads = CONFIG["hidden_size"], CONFIG["num_attention_heads"]
    size = h // heads
    ids = tf.constant(input_ids)
    batch, length = len(input_ids), len(input_ids[0])

    def norm(x, scope):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + 1e-12) * w[f"{scope}/gamma"] + w[f"{scope}/beta"]

    def dense(x, scope):
        return tf.tensordot(x, w[f"{scope}/kernel"], axes=1) + w[f"{scope}/bias"]

    def gelu(x):
        return 0.5 * x * (1.0 + tf.math.erf(x / np.sqrt(2.0)))

    x = tf.gather(w["bert/embeddings/word_embeddings"], ids)
    x += tf.gather(w["bert/embeddings/token_type_embeddings"], tf.constant(token_type_ids))
    x += w["bert/embeddings/position_embeddings"][:length][None]
    x = norm(x, "bert/embeddings/LayerNorm")
    mask_bias = (1.0 - tf.constant(attention_mask, tf.float32))[:, None, None, :] * -10000.0
    hidden = [x]
    for n in range(CONFIG["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{n}"

        def split(t):
            return tf.transpose(tf.reshape(t, [batch, length, heads, size]), [0, 2, 1, 3])

        q, k, v = (split(dense(x, f"{layer}/attention/self/{p}")) for p in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(size) + mask_bias
        context = tf.reshape(tf.transpose(tf.matmul(tf.nn.softmax(scores), v), [0, 2, 1, 3]), [batch, length, h])
        attended = norm(dense(context, f"{layer}/attention/output/dense") + x, f"{layer}/attention/output/LayerNorm")
        inner = gelu(dense(attended, f"{layer}/intermediate/dense"))
        x = norm(dense(inner, f"{layer}/output/dense") + attended, f"{layer}/output/LayerNorm")
        hidden.append(x)
    pooled = tf.tanh(dense(x[:, 0], "bert/pooler/dense"))
    outputs = {"hidden_states": tf.stack(hidden), "pooled": pooled}
    if "cls/predictions/output_bias" in w:
        t = norm(gelu(dense(x, "cls/predictions/transform/dense")), "cls/predictions/transform/LayerNorm")
        decoder = tf.transpose(w["bert/embeddings/word_embeddings"])  # tied to the embeddings
        outputs["mlm_logits"] = tf.tensordot(t, decoder, axes=1) + w["cls/predictions/output_bias"]
        outputs["nsp_logits"] = (
            tf.matmul(pooled, w["cls/seq_relationship/output_weights"], transpose_b=True)
            + w["cls/seq_relationship/output_bias"]
        )
    if "output_weights" in w:
        outputs["ner_logits"] = tf.tensordot(x, tf.transpose(w["output_weights"]), axes=1) + w["output_bias"]
    return outputs


def write_release(tf, folder: Path, basename: str, vocab: list[str], *, keep, slots: tuple[str, ...], extra=()) -> dict:
    """A graph-mode Saver checkpoint of the reference weights ``keep`` selects, with optimizer slots."""
    folder.mkdir(parents=True)
    (folder / "bert_config.json").write_text(json.dumps(CONFIG, indent=2, sort_keys=True) + "\n")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    weights = {name: value for name, value in reference_weights().items() if keep(name)}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        variables = {name: tf.compat.v1.get_variable(name, initializer=value) for name, value in weights.items()}
        for name, value in weights.items():
            for slot in slots:
                tf.compat.v1.get_variable(f"{name}/{slot}", initializer=np.full_like(value, 0.01))
        tf.compat.v1.train.get_or_create_global_step()
        for name in extra:
            tf.compat.v1.get_variable(name, initializer=np.float32(0.9))
        outputs = bert_forward(tf, variables, INPUT_IDS, TOKEN_TYPE_IDS, ATTENTION_MASK)
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(session, str(folder / basename), write_meta_graph=False, write_state=False)
        return session.run(outputs)


def write_tf2_bert(tf, folder: Path) -> None:
    """Object-based checkpoint of variables that keep Google's names, with a v1 Adam's slots."""
    root = tf.Module()
    weights = {n: v for n, v in reference_weights().items() if not n.startswith("output_")}
    root.encoder = [tf.Variable(value, name=name) for name, value in weights.items() if name.startswith("bert/")]
    root.heads = {
        name.split("/", 1)[1]: tf.Variable(value, name=name) for name, value in weights.items() if name.startswith("cls/")
    }
    trainable = root.encoder + list(root.heads.values())
    optimizer = tf.compat.v1.train.AdamOptimizer(1e-3)
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in trainable])
    checkpoint = tf.train.Checkpoint(model=root, optimizer=optimizer)
    checkpoint.save(str(folder / "ckpt"))
    (folder / "bert_config.json").write_text(json.dumps(CONFIG, indent=2, sort_keys=True) + "\n")
    (folder / "vocab.txt").write_text("\n".join(UNCASED_VOCAB) + "\n", encoding="utf-8")


def write_tf2_keras(tf, folder: Path) -> None:
    """Object-based checkpoint named like TF Model Garden's BertEncoder: not Google BERT names."""
    root = tf.Module()
    root.layers = [
        tf.Variable(
            np.zeros((CONFIG["vocab_size"], CONFIG["hidden_size"]), np.float32), name="word_embeddings/embeddings"
        ),
        tf.Variable(np.zeros((8, 2, 4), np.float32), name="transformer/layer_0/self_attention/query/kernel"),
    ]
    tf.train.Checkpoint(encoder=root).save(str(folder / "ckpt"))
    (folder / "bert_config.json").write_text(json.dumps(CONFIG, indent=2, sort_keys=True) + "\n")
    (folder / "vocab.txt").write_text("\n".join(UNCASED_VOCAB) + "\n", encoding="utf-8")


def write_many_variables(tf, folder: Path) -> None:
    folder.mkdir(parents=True)
    prefix = str(folder / "model.ckpt")
    config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
    with tf.Graph().as_default(), tf.compat.v1.Session(config=config) as session:
        for i in range(MANY_COUNT):
            with tf.device(f"/cpu:{i % 2}"):
                tf.compat.v1.get_variable(many_name(i), initializer=np.float32(i))
        with tf.device("/cpu:1"):
            tf.compat.v1.get_variable("typed/float64", initializer=np.array([1.25, -2.5], np.float64))
            tf.compat.v1.get_variable("typed/float16", initializer=np.array([[0.5, 1.5, -3.0]], np.float16))
            tf.compat.v1.get_variable("typed/bfloat16", initializer=tf.constant([1.5, -2.0, 256.0], tf.bfloat16))
            tf.compat.v1.get_variable("typed/int32", initializer=np.array([7, -8, 2**31 - 1], np.int32))
            tf.compat.v1.get_variable("typed/int64", initializer=np.int64(2**40 + 3))
            tf.compat.v1.get_variable("typed/bool", initializer=np.array([True, False, True]))
            tf.compat.v1.get_variable("typed/empty", initializer=np.zeros((0, 3), np.float32))
            tf.compat.v1.get_variable("typed/string", initializer=tf.constant(STRING_VALUES), dtype=tf.string)
            tf.compat.v1.get_variable(
                "partitioned",
                shape=PARTITIONED_SHAPE,
                initializer=tf.compat.v1.ones_initializer(),
                partitioner=tf.compat.v1.fixed_size_partitioner(2),
            )
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver(sharded=True).save(session, prefix, write_meta_graph=False, write_state=False)
    # tf.train.list_variables, without the MANY_COUNT names many_name() rebuilds.
    listing = [[name, list(shape)] for name, shape in tf.train.list_variables(prefix) if not name.startswith("many/")]
    assert len(tf.train.list_variables(prefix)) == len(listing) + MANY_COUNT
    (folder / "listing.json").write_text(json.dumps(listing) + "\n")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    if HERE.exists():
        shutil.rmtree(HERE)
    HERE.mkdir(parents=True)
    no_classifier = lambda name: not name.startswith("output_")  # noqa: E731
    expected = write_release(
        tf, HERE / "uncased_L-2_H-8_A-2", "bert_model.ckpt", UNCASED_VOCAB, keep=no_classifier,
        slots=("adam_m", "adam_v"),
    )
    write_release(
        tf, HERE / "biobert_v1.0_pubmed_pmc", "biobert_model.ckpt", CASED_VOCAB, keep=no_classifier,
        slots=("BERTAdam", "BERTAdam_1"),
    )
    finetuned = write_release(
        tf, HERE / "finetuned_ner", "model.ckpt-1200", CASED_VOCAB, keep=lambda name: not name.startswith("cls/"),
        slots=("LAMB", "LAMB_1"), extra=("beta1_power", "beta2_power"),
    )
    write_tf2_bert(tf, HERE / "tf2_bert")
    write_tf2_keras(tf, HERE / "tf2_keras")
    write_many_variables(tf, HERE / "many_variables")
    np.savez(
        HERE / "expected_outputs.npz",
        input_ids=np.array(INPUT_IDS), token_type_ids=np.array(TOKEN_TYPE_IDS), attention_mask=np.array(ATTENTION_MASK),
        hidden_states=expected["hidden_states"], mlm_logits=expected["mlm_logits"], nsp_logits=expected["nsp_logits"],
        ner_logits=finetuned["ner_logits"],
    )
    assert np.allclose(expected["hidden_states"], finetuned["hidden_states"])
    for path in sorted(HERE.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:8d}  {path.relative_to(HERE)}")


if __name__ == "__main__":
    sys.exit(main())
