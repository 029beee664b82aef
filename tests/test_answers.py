from speechkeep.evaluate.answers import is_correct, normalize_answer


def test_normalization():
    assert normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffel tower in paris"


def test_word_boundaries_and_any_reference():
    assert is_correct("The capital of France is Paris.", ["Paris"])
    assert not is_correct("He lived in a parish near the sea.", ["Paris"])
    assert is_correct("It was Jaxon Bieber, his brother", ["Jazmyn Bieber", "Jaxon Bieber"])
    assert not is_correct("Justin has siblings.", ["Jazmyn Bieber", "Jaxon Bieber"])
    assert not is_correct("anything", [""])
    assert is_correct("They speak the German language", ["German Language"])
