import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from forgetting_common.atomic import atomic_write_json, json_clean  # noqa: E402
from forgetting_common.figures import save_figure  # noqa: E402


def test_save_figure_writes_a_whole_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in out.parent.iterdir()] == ["curve.png"]


def test_save_figure_follows_the_suffix(tmp_path):
    fig, _ = plt.subplots()
    assert save_figure(fig, tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"


def test_json_is_always_valid_json(tmp_path):
    obj = {"acc": float("nan"), "curve": [1.0, float("inf"), np.float64("-inf")], "n": np.int64(3)}
    assert json_clean(obj) == {"acc": None, "curve": [1.0, None, None], "n": 3}
    atomic_write_json(tmp_path / "r.json", obj)
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "acc": None, "curve": [1.0, None, None], "n": 3,
    }
    assert math.isnan(float("nan"))


def test_forgetting_data_fixture_skips_with_its_reason(pytester, monkeypatch):
    pytester.makepyfile(
        """
        def test_needs_data(forgetting_data):
            forgetting_data("MNIST/raw")
        """
    )
    monkeypatch.delenv("FORGETTING_DATA", raising=False)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*FORGETTING_DATA is unset*"])
    monkeypatch.setenv("FORGETTING_DATA", str(pytester.path))
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*holds no MNIST/raw*"])
