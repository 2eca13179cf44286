import numpy as np
import pandas as pd
import pytest

from ssl_ecg.data.cinc import scored_labels
from ssl_ecg.errors import ConfigError
from ssl_ecg.evaluate.challenge import (
    challenge_score,
    challenge_year,
    equivalent_codes,
    load_challenge_weights,
    modified_confusion_matrix,
)

# Transcribed verbatim from the official files (not produced by our code); read through the search tool's
# read_file, which returned these commits:
# 2021: github.com/physionetchallenges/evaluation-2021, weights.csv at commit
#   ef74b668fb33a55da7e5cfaecbee31d40e105441 (26 scored groups). Its header writes the LBBB group as
#   "164909002|164909002"; dx_mapping_scored.csv (commit 09de852841a9fa497fb9efb80734dafd13e4ec1f)
#   says "We score 733534002 and 164909002 as the same diagnosis", so the bundled file spells the group
#   "733534002|164909002" (OFFICIAL_LBBB_FIX below); every weight is as published.
# 2020: the 24-group matrix, weights.csv of github.com/physionetchallenges/evaluation-2021 at commit
#   e024f4e312385b4c0119e9b14daeb701a3888817 (the 2020 file the 2021 repository started from;
#   evaluation-2020's own weights.csv is not in the searchable index); its 27 codes match
#   evaluation-2020 dx_mapping_scored.csv (commit 34746ef2c98a64f3554c69059f02f65fff379882).
OFFICIAL_2021_WEIGHTS_CSV = """\
,164889003,164890007,6374002,426627000,164909002|164909002,713427006|59118001,270492004,713426002,39732003,445118002,164947007,251146004,111975006,698252002,426783006,284470004|63593006,10370003,365413008,427172004|17338001,164917005,47665007,427393009,426177001,427084000,164934002,59931005
164889003,1.0,0.5,0.475,0.3,0.475,0.4,0.3,0.3,0.35,0.35,0.3,0.425,0.45,0.35,0.25,0.3375,0.375,0.425,0.375,0.4,0.35,0.3,0.3,0.375,0.5,0.5
164890007,0.5,1.0,0.475,0.3,0.475,0.4,0.3,0.3,0.35,0.35,0.3,0.425,0.45,0.35,0.25,0.3375,0.375,0.425,0.375,0.4,0.35,0.3,0.3,0.375,0.5,0.5
6374002,0.475,0.475,1.0,0.325,0.475,0.425,0.325,0.325,0.375,0.375,0.325,0.45,0.475,0.375,0.275,0.3625,0.4,0.45,0.4,0.375,0.375,0.325,0.325,0.4,0.475,0.475
426627000,0.3,0.3,0.325,1.0,0.325,0.4,0.5,0.5,0.45,0.45,0.5,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,0.5,0.5,0.425,0.3,0.3
164909002|164909002,0.475,0.475,0.475,0.325,1.0,0.425,0.325,0.325,0.375,0.375,0.325,0.45,0.475,0.375,0.275,0.3625,0.4,0.45,0.4,0.375,0.375,0.325,0.325,0.4,0.475,0.475
713427006|59118001,0.4,0.4,0.425,0.4,0.425,1.0,0.4,0.4,0.45,0.45,0.4,0.475,0.45,0.45,0.35,0.4375,0.475,0.475,0.475,0.3,0.45,0.4,0.4,0.475,0.4,0.4
270492004,0.3,0.3,0.325,0.5,0.325,0.4,1.0,0.5,0.45,0.45,0.5,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,0.5,0.5,0.425,0.3,0.3
713426002,0.3,0.3,0.325,0.5,0.325,0.4,0.5,1.0,0.45,0.45,0.5,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,0.5,0.5,0.425,0.3,0.3
39732003,0.35,0.35,0.375,0.45,0.375,0.45,0.45,0.45,1.0,0.5,0.45,0.425,0.4,0.5,0.4,0.4875,0.475,0.425,0.475,0.25,0.5,0.45,0.45,0.475,0.35,0.35
445118002,0.35,0.35,0.375,0.45,0.375,0.45,0.45,0.45,0.5,1.0,0.45,0.425,0.4,0.5,0.4,0.4875,0.475,0.425,0.475,0.25,0.5,0.45,0.45,0.475,0.35,0.35
164947007,0.3,0.3,0.325,0.5,0.325,0.4,0.5,0.5,0.45,0.45,1.0,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,0.5,0.5,0.425,0.3,0.3
251146004,0.425,0.425,0.45,0.375,0.45,0.475,0.375,0.375,0.425,0.425,0.375,1.0,0.475,0.425,0.325,0.4125,0.45,0.475,0.45,0.325,0.425,0.375,0.375,0.45,0.425,0.425
111975006,0.45,0.45,0.475,0.35,0.475,0.45,0.35,0.35,0.4,0.4,0.35,0.475,1.0,0.4,0.3,0.3875,0.425,0.475,0.425,0.35,0.4,0.35,0.35,0.425,0.45,0.45
698252002,0.35,0.35,0.375,0.45,0.375,0.45,0.45,0.45,0.5,0.5,0.45,0.425,0.4,1.0,0.4,0.4875,0.475,0.425,0.475,0.25,0.5,0.45,0.45,0.475,0.35,0.35
426783006,0.25,0.25,0.275,0.45,0.275,0.35,0.45,0.45,0.4,0.4,0.45,0.325,0.3,0.4,1.0,0.4125,0.375,0.325,0.375,0.15,0.4,0.45,0.45,0.375,0.25,0.25
284470004|63593006,0.3375,0.3375,0.3625,0.4625,0.3625,0.4375,0.4625,0.4625,0.4875,0.4875,0.4625,0.4125,0.3875,0.4875,0.4125,1.0,0.4625,0.4125,0.4625,0.2375,0.4875,0.4625,0.4625,0.4625,0.3375,0.3375
10370003,0.375,0.375,0.4,0.425,0.4,0.475,0.425,0.425,0.475,0.475,0.425,0.45,0.425,0.475,0.375,0.4625,1.0,0.45,0.5,0.275,0.475,0.425,0.425,0.5,0.375,0.375
365413008,0.425,0.425,0.45,0.375,0.45,0.475,0.375,0.375,0.425,0.425,0.375,0.475,0.475,0.425,0.325,0.4125,0.45,1.0,0.45,0.325,0.425,0.375,0.375,0.45,0.425,0.425
427172004|17338001,0.375,0.375,0.4,0.425,0.4,0.475,0.425,0.425,0.475,0.475,0.425,0.45,0.425,0.475,0.375,0.4625,0.5,0.45,1.0,0.275,0.475,0.425,0.425,0.5,0.375,0.375
164917005,0.4,0.4,0.375,0.2,0.375,0.3,0.2,0.2,0.25,0.25,0.2,0.325,0.35,0.25,0.15,0.2375,0.275,0.325,0.275,1.0,0.25,0.2,0.2,0.275,0.4,0.4
47665007,0.35,0.35,0.375,0.45,0.375,0.45,0.45,0.45,0.5,0.5,0.45,0.425,0.4,0.5,0.4,0.4875,0.475,0.425,0.475,0.25,1.0,0.45,0.45,0.475,0.35,0.35
427393009,0.3,0.3,0.325,0.5,0.325,0.4,0.5,0.5,0.45,0.45,0.5,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,1.0,0.5,0.425,0.3,0.3
426177001,0.3,0.3,0.325,0.5,0.325,0.4,0.5,0.5,0.45,0.45,0.5,0.375,0.35,0.45,0.45,0.4625,0.425,0.375,0.425,0.2,0.45,0.5,1.0,0.425,0.3,0.3
427084000,0.375,0.375,0.4,0.425,0.4,0.475,0.425,0.425,0.475,0.475,0.425,0.45,0.425,0.475,0.375,0.4625,0.5,0.45,0.5,0.275,0.475,0.425,0.425,1.0,0.375,0.375
164934002,0.5,0.5,0.475,0.3,0.475,0.4,0.3,0.3,0.35,0.35,0.3,0.425,0.45,0.35,0.25,0.3375,0.375,0.425,0.375,0.4,0.35,0.3,0.3,0.375,1.0,0.5
59931005,0.5,0.5,0.475,0.3,0.475,0.4,0.3,0.3,0.35,0.35,0.3,0.425,0.45,0.35,0.25,0.3375,0.375,0.425,0.375,0.4,0.35,0.3,0.3,0.375,0.5,1.0
"""
OFFICIAL_2020_WEIGHTS_CSV = """\
,270492004,164889003,164890007,426627000,713427006|59118001,713426002,445118002,39732003,164909002,251146004,698252002,10370003,284470004|63593006,427172004|17338001,164947007,111975006,164917005,47665007,427393009,426177001,426783006,427084000,164934002,59931005
270492004,1,0.3,0.3,0.5,0.4,0.5,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,0.5,0.35,0.2,0.45,0.5,0.5,0.45,0.425,0.3,0.3
164889003,0.3,1,0.5,0.3,0.4,0.3,0.35,0.35,0.475,0.425,0.35,0.375,0.3375,0.375,0.3,0.45,0.4,0.35,0.3,0.3,0.25,0.375,0.5,0.5
164890007,0.3,0.5,1,0.3,0.4,0.3,0.35,0.35,0.475,0.425,0.35,0.375,0.3375,0.375,0.3,0.45,0.4,0.35,0.3,0.3,0.25,0.375,0.5,0.5
426627000,0.5,0.3,0.3,1,0.4,0.5,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,0.5,0.35,0.2,0.45,0.5,0.5,0.45,0.425,0.3,0.3
713427006|59118001,0.4,0.4,0.4,0.4,1,0.4,0.45,0.45,0.425,0.475,0.45,0.475,0.4375,0.475,0.4,0.45,0.3,0.45,0.4,0.4,0.35,0.475,0.4,0.4
713426002,0.5,0.3,0.3,0.5,0.4,1,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,0.5,0.35,0.2,0.45,0.5,0.5,0.45,0.425,0.3,0.3
445118002,0.45,0.35,0.35,0.45,0.45,0.45,1,0.5,0.375,0.425,0.5,0.475,0.4875,0.475,0.45,0.4,0.25,0.5,0.45,0.45,0.4,0.475,0.35,0.35
39732003,0.45,0.35,0.35,0.45,0.45,0.45,0.5,1,0.375,0.425,0.5,0.475,0.4875,0.475,0.45,0.4,0.25,0.5,0.45,0.45,0.4,0.475,0.35,0.35
164909002,0.325,0.475,0.475,0.325,0.425,0.325,0.375,0.375,1,0.45,0.375,0.4,0.3625,0.4,0.325,0.475,0.375,0.375,0.325,0.325,0.275,0.4,0.475,0.475
251146004,0.375,0.425,0.425,0.375,0.475,0.375,0.425,0.425,0.45,1,0.425,0.45,0.4125,0.45,0.375,0.475,0.325,0.425,0.375,0.375,0.325,0.45,0.425,0.425
698252002,0.45,0.35,0.35,0.45,0.45,0.45,0.5,0.5,0.375,0.425,1,0.475,0.4875,0.475,0.45,0.4,0.25,0.5,0.45,0.45,0.4,0.475,0.35,0.35
10370003,0.425,0.375,0.375,0.425,0.475,0.425,0.475,0.475,0.4,0.45,0.475,1,0.4625,0.5,0.425,0.425,0.275,0.475,0.425,0.425,0.375,0.5,0.375,0.375
284470004|63593006,0.4625,0.3375,0.3375,0.4625,0.4375,0.4625,0.4875,0.4875,0.3625,0.4125,0.4875,0.4625,1,0.4625,0.4625,0.3875,0.2375,0.4875,0.4625,0.4625,0.4125,0.4625,0.3375,0.3375
427172004|17338001,0.425,0.375,0.375,0.425,0.475,0.425,0.475,0.475,0.4,0.45,0.475,0.5,0.4625,1,0.425,0.425,0.275,0.475,0.425,0.425,0.375,0.5,0.375,0.375
164947007,0.5,0.3,0.3,0.5,0.4,0.5,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,1,0.35,0.2,0.45,0.5,0.5,0.45,0.425,0.3,0.3
111975006,0.35,0.45,0.45,0.35,0.45,0.35,0.4,0.4,0.475,0.475,0.4,0.425,0.3875,0.425,0.35,1,0.35,0.4,0.35,0.35,0.3,0.425,0.45,0.45
164917005,0.2,0.4,0.4,0.2,0.3,0.2,0.25,0.25,0.375,0.325,0.25,0.275,0.2375,0.275,0.2,0.35,1,0.25,0.2,0.2,0.15,0.275,0.4,0.4
47665007,0.45,0.35,0.35,0.45,0.45,0.45,0.5,0.5,0.375,0.425,0.5,0.475,0.4875,0.475,0.45,0.4,0.25,1,0.45,0.45,0.4,0.475,0.35,0.35
427393009,0.5,0.3,0.3,0.5,0.4,0.5,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,0.5,0.35,0.2,0.45,1,0.5,0.45,0.425,0.3,0.3
426177001,0.5,0.3,0.3,0.5,0.4,0.5,0.45,0.45,0.325,0.375,0.45,0.425,0.4625,0.425,0.5,0.35,0.2,0.45,0.5,1,0.45,0.425,0.3,0.3
426783006,0.45,0.25,0.25,0.45,0.35,0.45,0.4,0.4,0.275,0.325,0.4,0.375,0.4125,0.375,0.45,0.3,0.15,0.4,0.45,0.45,1,0.375,0.25,0.25
427084000,0.425,0.375,0.375,0.425,0.475,0.425,0.475,0.475,0.4,0.45,0.475,0.5,0.4625,0.5,0.425,0.425,0.275,0.475,0.425,0.425,0.375,1,0.375,0.375
164934002,0.3,0.5,0.5,0.3,0.4,0.3,0.35,0.35,0.475,0.425,0.35,0.375,0.3375,0.375,0.3,0.45,0.4,0.35,0.3,0.3,0.25,0.375,1,0.5
59931005,0.3,0.5,0.5,0.3,0.4,0.3,0.35,0.35,0.475,0.425,0.35,0.375,0.3375,0.375,0.3,0.45,0.4,0.35,0.3,0.3,0.25,0.375,0.5,1
"""
OFFICIAL_LBBB_FIX = {"164909002|164909002": "733534002|164909002"}  # 2021 only; see above
AF, AFL, NSR, IAVB, LBBB, CLBBB, BBB = "164889003", "164890007", "426783006", "270492004", "164909002", "733534002", \
    "6374002"


def _reference_score(weights, labels, outputs, normal):
    """The official algorithm (compute_challenge_metric), written as plain float64 loops."""
    def confusion(lab, out):
        a = np.zeros((lab.shape[1], lab.shape[1]))
        for r in range(len(lab)):
            norm = max(sum(1 for c in range(lab.shape[1]) if lab[r, c] or out[r, c]), 1)
            for j in range(lab.shape[1]):
                for k in range(lab.shape[1]):
                    if lab[r, j] and out[r, k]:
                        a[j, k] += 1.0 / norm
        return a

    inactive = np.zeros_like(labels)
    inactive[:, normal] = 1
    obs = (weights * confusion(labels, outputs)).sum()
    cor = (weights * confusion(labels, labels)).sum()
    ina = (weights * confusion(labels, inactive)).sum()
    return (obs - ina) / (cor - ina) if cor != ina else 0.0


def _official(text: str, fix: dict) -> tuple[list[tuple[str, ...]], np.ndarray]:
    lines = [line.split(",") for line in text.strip().splitlines()]
    header = [fix.get(g, g) for g in lines[0][1:]]
    assert [fix.get(line[0], line[0]) for line in lines[1:]] == header  # rows and columns in one order
    return [tuple(g.split("|")) for g in header], np.array([[float(v) for v in line[1:]] for line in lines[1:]])


@pytest.mark.parametrize("year, text, fix, n", [(2021, OFFICIAL_2021_WEIGHTS_CSV, OFFICIAL_LBBB_FIX, 26),
                                                (2020, OFFICIAL_2020_WEIGHTS_CSV, {}, 24)])
def test_bundled_weights_match_the_official_files(year, text, fix, n):
    groups, official = _official(text, fix)
    assert official.shape == (n, n) and np.array_equal(official, official.T) and (np.diag(official) == 1).all()
    classes, w = load_challenge_weights(year)
    assert classes == [g[0] for g in groups] and w.shape == (n, n)
    np.testing.assert_array_equal(w, official)  # every one of the n x n weights
    assert equivalent_codes(year) == {code: g[0] for g in groups for code in g}


def test_2021_adds_two_classes_and_merges_lbbb():
    c20, c21 = load_challenge_weights(2020)[0], load_challenge_weights(2021)[0]
    assert set(c21) - set(c20) == {BBB, "365413008", CLBBB} and set(c20) - set(c21) == {LBBB}
    assert equivalent_codes(2021)[LBBB] == CLBBB and equivalent_codes(2020)[LBBB] == LBBB
    assert scored_labels([LBBB, BBB, "17338001", "999"], 2021) == sorted([BBB, CLBBB, "427172004"])
    assert scored_labels([LBBB, BBB, "17338001", "999"], 2020) == sorted([LBBB, "427172004"])
    w = load_challenge_weights(2021)[1]
    assert w[c21.index("365413008"), c21.index(BBB)] == 0.45 and w[c21.index("164917005"), c21.index(NSR)] == 0.15


def test_year_follows_the_dataset():
    assert challenge_year("cinc2021") == 2021 and challenge_year("cinc2020") == 2020
    assert challenge_year("chapman") == 2021 and challenge_year("ptbxl") is None
    with pytest.raises(ConfigError, match="year"):
        load_challenge_weights(2019)


def _rows(classes, sets):
    out = np.zeros((len(sets), len(classes)), bool)
    for i, s in enumerate(sets):
        out[i, [classes.index(c) for c in s]] = True
    return out


def test_hand_computed_2021_score_keeps_unscored_records():
    classes, w = load_challenge_weights(2021)
    labels = _rows(classes, [{AF}, {NSR}, set()])  # the third record has no scored class: an all-zero row
    outputs = _rows(classes, [{AF, AFL}, {NSR}, {AF}])
    # observed: 0.5*W(AF,AF) + 0.5*W(AF,AFL) + W(NSR,NSR) = 0.5 + 0.25 + 1 = 1.75; correct: 2
    # inactive (sinus rhythm only): 0.5*W(AF,NSR) + 1 = 0.125 + 1 = 1.125 -> (1.75-1.125)/(2-1.125) = 5/7
    assert challenge_score(labels, outputs, year=2021) == pytest.approx(5 / 7, abs=1e-15)
    assert challenge_score(labels, outputs) == pytest.approx(5 / 7, abs=1e-15)  # 26 columns: 2021
    ref = _reference_score(w, labels.astype(int), outputs.astype(int), classes.index(NSR))
    assert ref == pytest.approx(5 / 7, abs=1e-15)
    assert challenge_score(labels, labels, year=2021) == pytest.approx(1.0)
    inactive = _rows(classes, [{NSR}] * 3)
    assert challenge_score(labels, inactive, year=2021) == pytest.approx(0.0, abs=1e-15)


def test_hand_computed_2020_score():
    classes, w = load_challenge_weights(2020)
    labels = _rows(classes, [{IAVB}, {NSR}])
    outputs = _rows(classes, [{IAVB, AF}, {NSR}])
    # observed: 0.5*1 + 0.5*W(IAVB,AF)=0.5*0.3 -> 0.65, + 1 = 1.65; correct 2; inactive 0.5*0.45 + 1 = 1.225
    assert challenge_score(labels, outputs, year=2020) == pytest.approx(0.425 / 0.775, abs=1e-15)
    assert challenge_score(labels, labels) == pytest.approx(1.0)
    assert challenge_score(labels, _rows(classes, [{NSR}, {NSR}])) == pytest.approx(0.0, abs=1e-15)
    assert _reference_score(w, labels.astype(int), outputs.astype(int), classes.index(NSR)) == \
        pytest.approx(0.425 / 0.775, abs=1e-15)


@pytest.mark.parametrize("year", [2020, 2021])
def test_score_matches_the_loop_reference_on_random_multilabel_outputs(year):
    classes, w = load_challenge_weights(year)
    rng = np.random.default_rng(year)
    labels = rng.random((60, len(classes))) < 0.1
    labels[:5] = False  # unscored records
    outputs = rng.random((60, len(classes))) < 0.15
    ref = _reference_score(w, labels.astype(int), outputs.astype(int), classes.index(NSR))
    assert challenge_score(labels, outputs, year=year) == pytest.approx(ref, abs=1e-12)


def test_partial_credit_and_shape_errors():
    classes, _ = load_challenge_weights(2020)
    labels = _rows(classes, [{classes[0]}])
    a = modified_confusion_matrix(labels, _rows(classes, [{classes[1]}]))  # one wrong output: |Y ∪ O| = 2
    assert a[0, 1] == 0.5 and a.sum() == 0.5
    with pytest.raises(ValueError, match="columns"):
        challenge_score(labels[:, :5], labels[:, :5])
    with pytest.raises(ValueError, match="26"):
        challenge_score(labels, labels, year=2021)


def test_curve_keeps_unscored_cinc_records_as_zero_rows():
    from ssl_ecg.evaluate.curve import _challenge_row
    from ssl_ecg.evaluate.tasks import is_challenge_task as _is_challenge_task
    from ssl_ecg.evaluate.tasks import task_y as _task_y

    column = pd.Series([[AF], [NSR], [], np.nan, [AF, NSR], [NSR], [AF], [NSR], []], dtype=object)
    split = np.array(["train", "train", "train", "train", "val", "val", "test", "test", "test"])
    y, names = _task_y(column, split, "scored", {}, challenge_year=2021)
    assert names == sorted([AF, NSR]) and _is_challenge_task(names, y, 2021)
    assert (y[2] == 0).all() and (y[8] == 0).all() and np.isnan(y[3]).all()  # [] kept, NaN (no list) left out
    y_old, _ = _task_y(column, split, "scored", {})
    assert np.isnan(y_old[2]).all()  # without a challenge year: a generic multi-label task drops empty rows
    assert not _is_challenge_task([BBB, AF], y, 2020) and _is_challenge_task([BBB, AF], y, 2021)
    yv, yt = y[4:6].astype(int), y[6:].astype(int)
    row = _challenge_row(names, yv, yv.astype(float), yt, yt.astype(float), year=2021)
    assert row["value"] == pytest.approx(1.0) and row["val_value"] == pytest.approx(1.0)
