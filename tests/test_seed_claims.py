"""The seeds' claims are called held, reversed, not shown or not measured from paired tests, never from point
estimates alone."""

import pytest

from speechkeep.recipes.seed_claims import SEED_CLAIMS, Claim, check_claims, claims_for, reduction_claims

N = 400


def _flags(right: set[int]) -> dict[str, bool]:
    return {f"q{i}": i in right for i in range(N)}


def _rows(claims, acc, errs=None):
    return {r["claim"]: r for r in check_claims(lambda c, t: acc.get((c, t)), lambda c: (errs or {}).get(c), claims)}


def test_an_ordering_holds_only_when_significant_in_its_direction():
    full = set(range(40))
    acc = {("full", "t2t"): _flags(full), ("layer_lr", "t2t"): _flags(set(range(80))),  # +10 points: significant
           ("lora", "t2t"): _flags(set(range(2, 43))),  # +0.25 points: noise
           ("lora", "s2t"): _flags(set(range(10))), ("layer_lr", "s2t"): _flags(set(range(60)))}
    claims = [c for c in SEED_CLAIMS if c.a[0] in ("layer_lr", "lora") and c.b[0] in ("full", "layer_lr", "lora")]
    rows = _rows(claims, acc)
    assert rows["Layer-LR keeps more text than full fine-tuning"]["verdict"] == "holds"
    assert rows["Layer-LR keeps more text than full fine-tuning"]["difference"] == pytest.approx(0.1)
    assert rows["LoRA keeps more text than full fine-tuning"]["verdict"] == "not shown (no significant difference)"
    assert rows["LoRA reaches higher S2T than Layer-LR"]["verdict"] == "reversed (significant)"
    assert rows["LoRA reaches higher S2T than Layer-LR"]["p_value"] < 0.05
    # S2T of full was not evaluated: the claims that need it say so
    assert rows["Layer-LR improves S2T over full fine-tuning"]["verdict"] == "not measured (needs full)"


def test_a_claimed_drop_holds_reverses_or_is_not_shown():
    drop = [c for c in SEED_CLAIMS if c.a == ("full", "t2t") and c.b == ("noft", "t2t")]
    noft = _flags(set(range(60)))
    for full, verdict in ((set(range(20)), "holds"), (set(range(100)), "reversed (significant)"),
                          (set(range(58)), "not shown (no significant difference)")):
        row = next(iter(_rows(drop, {("full", "t2t"): _flags(full), ("noft", "t2t"): noft}).values()))
        assert row["verdict"] == verdict, (len(full), row)
    # two cells evaluated on different questions are not compared
    row = next(iter(_rows(drop, {("full", "t2t"): {"q1": True}, ("noft", "t2t"): noft}).values()))
    assert row["verdict"].startswith("not comparable (evaluated on different questions: 1 vs 400")


def test_parity_claims_hold_unless_a_significant_difference():
    same = Claim("001", "stable", ("lora_r16", "t2t"), ("lora", "t2t"), "same")
    base = _flags(set(range(40)))
    assert _rows([same], {("lora_r16", "t2t"): _flags(set(range(1, 42))), ("lora", "t2t"): base})["stable"][
        "verdict"] == "not refuted (no significant difference)"
    assert _rows([same], {("lora_r16", "t2t"): _flags(set(range(100))), ("lora", "t2t"): base})["stable"][
        "verdict"] == "refuted (significantly better)"
    assert _rows([same], {("lora_r16", "t2t"): _flags(set()), ("lora", "t2t"): base})["stable"][
        "verdict"] == "refuted (significantly worse)"
    # ASR: WER errors per utterance; the up-scaled model is 'not worse' unless its WER is significantly higher
    asr = Claim("003", "asr", ("upscale_x", "asr"), ("full", "asr"), "not_worse")
    full = {f"u{i}": (1, 10) for i in range(N)}
    for up, verdict in (({f"u{i}": (1, 10) for i in range(N)}, "not refuted (no significant difference)"),
                        ({f"u{i}": (4, 10) for i in range(N)}, "refuted (significantly worse)"),
                        ({f"u{i}": (0, 10) for i in range(N)}, "holds (significantly better)")):
        row = _rows([asr], {}, {"upscale_x": up, "full": full})["asr"]
        assert row["verdict"] == verdict and row["p_value"] is None


def test_every_up_scaling_cell_gets_seed_003_claims_and_the_75_percent_bar_reads_the_interval():
    claims = claims_for({"upscale_a": ("A blocks", "ebranchformer"), "upscale_b": ("B blocks", "transformer")})
    assert len(claims) == len(SEED_CLAIMS) + 6
    assert {c.a[0] for c in claims if c.seed == "003"} == {"upscale_a", "upscale_b"}
    # E-Branchformer: "matches or surpasses" full's ASR (not worse); Transformer blocks: "comparable" (two-sided)
    assert {c.a[0]: c.direction for c in claims if c.a[1] == "asr"} == {"upscale_a": "not_worse", "upscale_b": "same"}
    both = claims_for({"upscale_ebranchformer": ("E", "ebranchformer"), "upscale_transformer": ("T", "transformer")})
    assert (("upscale_ebranchformer", "asr"), ("upscale_transformer", "asr"), "lower") in {
        (c.a, c.b, c.direction) for c in both}
    ok = {"undefined_fraction": 0.0}
    red = {"upscale_a": {"reduction": 0.9, "ci_low": 0.8, "ci_high": 1.0, **ok},
           "upscale_b": {"reduction": 0.1, "ci_low": -1.0, "ci_high": 0.5, **ok},
           "upscale_c": {"reduction": 0.7, "ci_low": 0.5, "ci_high": 0.9, **ok},
           "upscale_d": {"reduction": None, "ci_low": None, "ci_high": None, "undefined_fraction": 0.6},
           "upscale_e": {"reduction": 0.9, "ci_low": 0.8, "ci_high": 1.0, "undefined_fraction": 0.1},
           "upscale_t": {"reduction": 0.9, "ci_low": 0.8, "ci_high": 1.0, **ok}}
    # the bar is checked on the cells given (the E-Branchformer ones), never on others such as upscale_t
    eb = {c: c for c in ("upscale_a", "upscale_b", "upscale_c", "upscale_d", "upscale_e")}
    got = {r["a"][0]: r["verdict"] for r in reduction_claims(red, eb)}
    assert got == {"upscale_a": "holds", "upscale_b": "does not hold (interval below 75%)",
                   "upscale_c": "not shown (interval includes 75%)",
                   "upscale_d": "not measurable (full fine-tuning's T2T did not drop)",
                   "upscale_e": "not measurable (full fine-tuning's drop is not significant: 10.0% of resamples without one)"}
