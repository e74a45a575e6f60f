from detector.traffic import score


def alert(user: str, a: str, b: str) -> dict:
    return {"user": user, "previous": {"event_id": a}, "current": {"event_id": b}}


def test_score_counts_matches_by_account_and_pair() -> None:
    labels = [{"user": "u", "previous": "1", "current": "2"}, {"user": "v", "previous": "3", "current": "4"}]
    s = score([alert("u", "2", "1"), alert("u", "1", "5"), alert("w", "3", "4")], labels)
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 2, 1)
    assert s.precision == 1 / 3 and s.recall == 0.5
    perfect = score([alert("u", "1", "2"), alert("v", "3", "4")], labels)
    assert (perfect.precision, perfect.recall) == (1.0, 1.0)
