"""The shipped aligned front-end (speechkeep/checkpoints/smollm2-135m+whisper-tiny.en) on real speech."""

import json

import pytest

from speechkeep.models.bundled import CHECKPOINTS_DIR, aligned_front_end, front_end_dir, shipped_front_ends

SPEC = "bundled:smollm2-135m+whisper-tiny.en"
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def aligned():
    from speechkeep.models.persistence import load_speech_llm

    model, trained = load_speech_llm(SPEC)
    assert trained
    return model.eval()


def test_shipped_checkpoint_is_small_and_carded():
    d = front_end_dir(SPEC)
    assert d == CHECKPOINTS_DIR / "smollm2-135m+whisper-tiny.en" and SPEC in shipped_front_ends()
    assert (d / "adaptor.safetensors").stat().st_size < 8 * 2**20
    card = (d / "CARD.md").read_text()
    report = json.loads((d / "report.json").read_text())
    # the card's headline numbers are the report's, and they meet issue 6's acceptance bar
    assert f"{100 * report['eval']['asr']['ctc_wer']:.1f}%" in card
    assert f"{100 * report['eval']['s2t']['accuracy']:.1f}%" in card
    assert report["eval"]["asr"]["ctc_wer"] <= 0.35 and report["eval"]["s2t"]["accuracy"] >= 0.05
    assert report["eval_set"]["voice"] not in report["corpus"]["voices"]


def test_unknown_front_end_is_a_clear_error():
    from speechkeep.errors import SpeechkeepError

    with pytest.raises(SpeechkeepError, match="available: bundled:smollm2-135m"):
        front_end_dir("bundled:nope+whisper-tiny.en")


def test_training_starts_from_the_front_end_by_default():
    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import resolve_init

    assert resolve_init(TrainConfig()) == str(aligned_front_end("bundled:smollm2-135m", "bundled:whisper-tiny.en"))
    assert resolve_init(load_config(TrainConfig, None, ["init_from=none"])) is None
    assert resolve_init(load_config(TrainConfig, None, ["model.llm=bundled:gemma3-270m"])) is None  # none shipped


def test_front_end_transcribes_and_answers_real_speech(aligned, piper_question):
    from speechkeep.align.ctc import ctc_transcribe
    from speechkeep.metrics import corpus_wer
    from speechkeep.models.speech_llm import Query

    text, audio = piper_question  # "What is the capital of France?", piper-joe
    frames = aligned.encode_speech([Query(audio=audio)])
    hyp = ctc_transcribe(aligned, frames)[0]
    assert corpus_wer([text], [hyp]) <= 0.35, hyp
    # the LLM reads about one input per spoken token, close to real token embeddings
    emb = aligned.adaptor(frames, token_embedding=aligned.llm.get_input_embeddings())[0]
    n_tokens = len(aligned.tokenizer(text.lower())["input_ids"])
    assert abs(emb.shape[0] - n_tokens) <= 3
    answer = aligned.generate([Query(audio=audio)], max_new_tokens=24)[0]
    assert "paris" in answer.lower(), answer
