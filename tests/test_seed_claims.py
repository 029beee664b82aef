"""The seeds' claims are called held, reversed, not shown or not measured from paired tests, never from point
estimates alone."""

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
    assert rows["Layer-LR keeps more text than full fine-tuning"]["difference"] == 0.1
    assert rows["LoRA keeps more text than full fine-tuning"]["verdict"] == "not shown (no significant difference)"
    assert rows["LoRA reaches higher S2T than Layer-LR"]["verdict"] == "reversed (significant)"
    assert rows["LoRA reaches higher S2T than Layer-LR"]["p_value"] < 0.05
    # S2T of full was not evaluated: the claims that need it say so
    assert rows["Layer-LR improves S2T over full fine-tuning"]["verdict"] == "not measured (needs full)"


def test_parity_claims_hold_unless_a_significant_difference():
    same = Claim("001", "stable", ("lora_r16", "t2t"), ("lora", "t2t"), "same")
    base = _flags(set(range(40)))
    assert _rows([same], {("lora_r16", "t2t"): _flags(set(range(1, 42))), ("lora", "t2t"): base})["stable"][
        "verdict"] == "holds (no significant difference)"
    assert _rows([same], {("lora_r16", "t2t"): _flags(set(range(100))), ("lora", "t2t"): base})["stable"][
        "verdict"] == "does not hold (significantly different)"
    # ASR: WER errors per utterance; the up-scaled model is 'not worse' unless its WER is significantly higher
    asr = Claim("003", "asr", ("upscale_x", "asr"), ("full", "asr"), "not_worse")
    full = {f"u{i}": (1, 10) for i in range(N)}
    for up, verdict in (({f"u{i}": (1, 10) for i in range(N)}, "holds (no significant difference)"),
                        ({f"u{i}": (4, 10) for i in range(N)}, "does not hold (significantly worse)"),
                        ({f"u{i}": (0, 10) for i in range(N)}, "holds (significantly better)")):
        row = _rows([asr], {}, {"upscale_x": up, "full": full})["asr"]
        assert row["verdict"] == verdict and row["p_value"] is None


def test_every_up_scaling_cell_gets_seed_003_claims_and_the_75_percent_bar_reads_the_interval():
    claims = claims_for({"full": "full", "upscale_a": "A blocks", "upscale_b": "B blocks", "lora": "lora"})
    assert len(claims) == len(SEED_CLAIMS) + 6
    assert {c.a[0] for c in claims if c.seed == "003"} == {"upscale_a", "upscale_b"}
    red = {"upscale_a": {"reduction": 0.9, "ci_low": 0.8, "ci_high": 1.0},
           "upscale_b": {"reduction": 0.1, "ci_low": -1.0, "ci_high": 0.5},
           "upscale_c": {"reduction": 0.7, "ci_low": 0.5, "ci_high": 0.9},
           "lora": {"reduction": 0.9, "ci_low": 0.8, "ci_high": 1.0}}
    got = {r["a"][0]: r["verdict"] for r in reduction_claims(red, {})}
    assert got == {"upscale_a": "holds", "upscale_b": "does not hold (interval below 75%)",
                   "upscale_c": "not shown (interval includes 75%)"}
