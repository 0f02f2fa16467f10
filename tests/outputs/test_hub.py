from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from huggingface_hub import HfApi, RepoUrl
from huggingface_hub.utils import filter_repo_objects

from ner.outputs.hub import (
    EVAL_TEXT_PATTERNS,
    UPLOAD_IGNORE,
    drop_secrets,
    files_to_upload,
    push_output_dir,
    write_training_args_json,
)

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"
REPO_ID = "someone/bert-ner"

UPLOADED = [
    "README.md",
    "all_results.json",
    "config.json",
    "eval_confusion.png",
    "eval_report.json",
    "eval_report.md",
    "model.safetensors",
    "plots/training_curves.png",
    "runs/Nov01_12-00-00_host/events.out.tfevents.1.host",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "trainer_state.json",
    "training_args.json",
    "vocab.txt",
]
# Quote dev/test sentences: uploaded only with include_eval_text (--push_eval_text).
EVAL_TEXT = [
    "eval_mistakes.json", "eval_mistakes.md", "eval_predictions.txt", "predict_mistakes.md", "predict_predictions.txt"
]
SENTENCE = "Maria Lopez flew from Madrid"
LEFT_OUT = [
    ".README.md.abc123.tmp",
    "checkpoint-5/config.json",
    "checkpoint-5/model.safetensors",
    "checkpoint-5/optimizer.pt",
    "checkpoint-5/training_args.bin",
    "checkpoint-10/trainer_state.json",
    "plots/.training_curves.png.x1.tmp",
    "training_args.bin",
]


class FakeTrainingArguments:
    """What ``write_training_args_json`` uses of ``TrainingArguments``: ``to_dict()``."""

    def to_dict(self):
        return {
            "output_dir": "out",
            "learning_rate": 5e-05,
            "hub_token": FAKE_TOKEN,
            "push_to_hub_token": FAKE_TOKEN,
            "hub_model_id": REPO_ID,
            "accelerator_config": {"split_batches": False, "token": FAKE_TOKEN},
            "report_to": ["tensorboard"],
        }


@pytest.fixture
def output_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    for relative in UPLOADED + LEFT_OUT + EVAL_TEXT:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}\n")
    for relative in EVAL_TEXT:
        quoting = f"gold: [PER {SENTENCE}]\n" if "report" in relative else SENTENCE.replace(" ", "\tO\tO\n")
        (folder / relative).write_text(quoting)
    (folder / "training_args.bin").write_bytes(b"pickled TrainingArguments " + FAKE_TOKEN.encode())
    (folder / "checkpoint-5" / "training_args.bin").write_bytes(FAKE_TOKEN.encode())
    write_training_args_json(FakeTrainingArguments(), folder)
    return folder


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the client's network calls; record what they were asked and what upload_folder would send."""
    calls: dict = {}

    def create_repo(self, repo_id, **kwargs):
        calls["token"] = self.token
        calls["create_repo"] = dict(kwargs, repo_id=repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"] = dict(kwargs, repo_id=repo_id)

    def upload_folder(self, *, folder_path, repo_id, ignore_patterns=None, **kwargs):
        ignore_patterns += [".git", ".git/*"]  # what huggingface_hub does to the list it is given
        folder = Path(folder_path)
        relative = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
        calls["uploaded"] = sorted(filter_repo_objects(relative, ignore_patterns=ignore_patterns))
        calls["contents"] = {path: (folder / path).read_bytes() for path in calls["uploaded"]}
        calls["upload_folder"] = dict(kwargs, repo_id=repo_id, folder_path=folder)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_the_model_folder_without_checkpoints_or_secrets(output_dir, fake_hub, caplog):
    ignore_before = list(UPLOAD_IGNORE)
    with caplog.at_level(logging.DEBUG):
        url = push_output_dir(output_dir, REPO_ID, token=FAKE_TOKEN, private=True, commit_message="End of training")

    assert url == f"https://huggingface.co/{REPO_ID}"
    assert fake_hub["token"] == FAKE_TOKEN
    assert fake_hub["create_repo"] == {"repo_id": REPO_ID, "exist_ok": True, "private": True, "repo_type": "model"}
    assert fake_hub["upload_folder"]["commit_message"] == "End of training"
    assert fake_hub["upload_folder"]["revision"] is None
    assert "create_branch" not in fake_hub
    assert fake_hub["uploaded"] == sorted(UPLOADED)
    assert not [path for path in fake_hub["uploaded"] if path.startswith("checkpoint-") or "training_args.bin" in path]
    for relative in fake_hub["uploaded"]:
        assert FAKE_TOKEN.encode() not in (output_dir / relative).read_bytes(), relative
    assert caplog.records and all(FAKE_TOKEN not in record.getMessage() for record in caplog.records)
    assert "15 files" in caplog.text and REPO_ID in caplog.text
    assert UPLOAD_IGNORE == ignore_before  # upload_folder's += did not reach the module's list


def test_files_to_upload_is_what_the_client_would_send(output_dir, fake_hub):
    push_output_dir(output_dir, REPO_ID)
    assert files_to_upload(output_dir) == fake_hub["uploaded"]
    assert fake_hub["token"] is None  # the stored login is used


def test_push_to_a_branch_and_with_extra_ignore_patterns(output_dir, fake_hub):
    push_output_dir(output_dir, REPO_ID, revision="v1", ignore_patterns=["*.png"], include_eval_text=True)
    assert fake_hub["create_branch"] == {"repo_id": REPO_ID, "branch": "v1", "exist_ok": True, "repo_type": "model"}
    assert fake_hub["upload_folder"]["revision"] == "v1"
    assert fake_hub["uploaded"] == sorted(
        set(UPLOADED + EVAL_TEXT) - {"eval_confusion.png", "plots/training_curves.png"}
    )


def test_evaluation_sentences_stay_off_the_hub_unless_asked_for(output_dir, fake_hub, caplog):
    with caplog.at_level(logging.INFO, logger="ner.outputs.hub"):
        push_output_dir(output_dir, REPO_ID)
    assert not set(EVAL_TEXT) & set(fake_hub["uploaded"])
    assert all(b"Lopez" not in content for content in fake_hub["contents"].values())
    assert "--push_eval_text" in caplog.text
    assert files_to_upload(output_dir) == fake_hub["uploaded"]

    push_output_dir(output_dir, REPO_ID, include_eval_text=True)
    assert set(EVAL_TEXT) <= set(fake_hub["uploaded"])
    with_text = {path for path, content in fake_hub["contents"].items() if b"Lopez" in content}
    assert with_text == set(EVAL_TEXT)
    assert files_to_upload(output_dir, include_eval_text=True) == fake_hub["uploaded"]


def test_eval_text_patterns_match_the_files_run_ner_writes():
    names = ["eval_predictions.txt", "predict_mistakes.md", "predict_mistakes.json", "eval_report.md", "README.md"]
    kept = list(filter_repo_objects(names, ignore_patterns=EVAL_TEXT_PATTERNS))
    assert kept == ["eval_report.md", "README.md"]


def test_push_refuses_a_file_holding_the_token(output_dir, fake_hub):
    (output_dir / "notes.txt").write_text(f"login with {FAKE_TOKEN}\n")
    with pytest.raises(ValueError, match=r"notes\.txt contains the Hub token, so it was not uploaded") as raised:
        push_output_dir(output_dir, REPO_ID, token=FAKE_TOKEN)
    assert FAKE_TOKEN not in str(raised.value)
    assert not fake_hub  # nothing created, nothing uploaded


def test_push_checks_for_the_stored_login_token_too(output_dir, fake_hub, monkeypatch):
    import ner.outputs.hub

    monkeypatch.setattr(ner.outputs.hub, "get_token", lambda: FAKE_TOKEN)
    (output_dir / "notes.txt").write_text(f"login with {FAKE_TOKEN}\n")
    with pytest.raises(ValueError, match=r"notes\.txt contains the Hub token"):
        push_output_dir(output_dir, REPO_ID)  # no token given: the upload would use the stored one
    assert not fake_hub


def test_push_refuses_a_missing_folder(tmp_path, fake_hub):
    with pytest.raises(ValueError, match="no such folder"):
        push_output_dir(tmp_path / "nowhere", REPO_ID)


def test_training_args_json_has_no_token(output_dir):
    text = (output_dir / "training_args.json").read_text()
    assert FAKE_TOKEN not in text and "token" not in text
    assert json.loads(text) == {
        "output_dir": "out",
        "learning_rate": 5e-05,
        "hub_model_id": REPO_ID,
        "accelerator_config": {"split_batches": False},
        "report_to": ["tensorboard"],
    }


def test_drop_secrets_is_deep_and_leaves_the_input_alone():
    settings = {"a": 1, "API_KEY": "k", "nested": [{"password": "p", "b": 2}], "Hub_Token": "t"}
    assert drop_secrets(settings) == {"a": 1, "nested": [{"b": 2}]}
    assert settings["Hub_Token"] == "t"
