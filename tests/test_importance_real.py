"""Importance on the real SmolLM2-135M: the deactivation test has the seed's shape (Table 1)."""

import json

import pytest

from speechkeep.models.speech_llm import Query

pytestmark = pytest.mark.real
from speechkeep.data.webquestions import webquestions_file


def test_deactivation_shape_on_smollm2(real_speech_llm):
    from speechkeep.importance.deactivate import deactivation_table
    from speechkeep.importance.runs import batched
    from speechkeep.importance.taylor import compute_importance

    model = real_speech_llm
    questions = [q["qText"] for q in json.loads(webquestions_file("devtest").read_text())[:64]]
    answers = []
    for i in range(0, len(questions), 16):
        answers += model.generate([Query(text=q) for q in questions[i:i + 16]], max_new_tokens=20)
    qs = [Query(text=q, response=a) for q, a in zip(questions, answers)]
    scored, held_out = qs[:48], qs[48:]
    res = compute_importance(model, batched(scored, 8), include_adaptor=False, progress=False)
    table = deactivation_table(model, res.scores, held_out, fraction=0.03, progress=False)
    assert table["top"] > 100 * table["base"]            # orders of magnitude
    assert table["bottom"] < 1.1 * table["base"]          # within about 10%
    assert table["bottom"] < table["random"] < table["top"]
