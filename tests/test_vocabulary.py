"""One vocabulary: each control's JSON key is also a CLI command name, a metric prefix and
a label of vsteer_controlled_requests_total; artifact kinds keep their own names."""

from __future__ import annotations

from vsteer.cli import _parser
from vsteer.server import metrics


def _func(argv: list[str]):
    return _parser().parse_args(argv).func


def test_control_keys_are_cli_names_too():
    assert _func(["hallucination", "train", "--data", "d", "--name", "n"]) is \
        _func(["probe", "train", "--data", "d", "--name", "n"])
    assert _func(["eval", "hallucination", "--out", "o"]) is _func(["eval", "probe", "--out", "o"])
    assert _func(["early-exit", "train", "--name", "n"]) is _func(["exit", "train", "--name",
                                                                   "n"])
    assert _func(["bench", "early-exit", "--predictor", "p", "--out", "o"]) is not None


def test_metric_names_use_the_control_keys():
    names = {m._name for m in (metrics.HALLUCINATION_SCORE, metrics.HALLUCINATION_ACTIONS,
                               metrics.EXIT_TOKENS, metrics.EXIT_SAVED,
                               metrics.REFUSAL_DECISIONS, metrics.REFUSAL_SCORE)}
    for n in names:
        assert n.startswith(("vsteer_hallucination_", "vsteer_early_exit_",
                             "vsteer_refusal_")), n
