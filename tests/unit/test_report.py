"""What the terminal shows of a search."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from autodl.report import leaderboard_table
from autodl.result import CandidateOutcome, SearchResult


def _result(names: list[str]) -> SearchResult:
    outcomes = [
        CandidateOutcome(
            name, "baseline", {}, "complete", fold_scores=[0.8 + i / 100] * 5, fit_seconds=12.345
        )
        for i, name in enumerate(names)
    ]
    return SearchResult(
        task="multiclass",
        metric="log_loss",
        greater_is_better=False,
        outcomes=outcomes,
        final_name=names[0],
        final_members={names[0]: 1.0},
        cv_score=0.8,
        test_scores={},
        output_dir=None,
        model_dir=None,
        decisions={},
    )


def test_the_leaderboard_shows_every_candidate_name_whole_in_an_80_column_terminal():
    """The HGB baselines differ only after 22 characters: a cut name would hide which is which."""
    names = [
        "hist_gradient_boosting_poisson",
        "hist_gradient_boosting_tuned",
        "hist_gradient_boosting",
        "keras_trial_12",
    ]
    console = Console(width=80, record=True)
    console.print(leaderboard_table(_result(names)))
    shown = console.export_text()
    assert all(name in shown for name in names)
    assert "0.8000" in shown and "12.3" in shown  # the score and the fit seconds, whole
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_past_searches_show_whole_run_ids_when_they_fit_and_a_narrow_table_keeps_names_and_scores_whole():
    from datetime import datetime

    from autodl.runs import PastSearch, searches_table

    run_id = "687814de6d2b4b92a8a6cf6b20a70fc1"
    search = PastSearch(
        run_id=run_id,
        run_name="titanic-60s",
        experiment="autodl",
        started=datetime(2026, 12, 3, 6, 22),
        status="FINISHED",
        task="binary",
        metric="roc_auc",
        cv_score=0.881,
        test_score=0.8325,
        final_model="ensemble of 4",
        interrupted=False,
        model_uri="models:/m-fdd3",
    )
    for width, cut in ((200, False), (80, True)):
        table, shortened = searches_table([search], "searches", width)
        console = Console(width=width, record=True)
        console.print(table)
        shown = console.export_text()
        assert shortened is cut and (run_id in shown) is not cut
        assert all(whole in shown for whole in ("titanic-60s", "roc_auc", "0.8810", "0.8325", "FINISHED"))
        assert "ensemble" in shown and max(len(line) for line in shown.splitlines()) <= width
    interrupted = replace(
        search,
        run_name="search-20261203-062215",
        final_model="ensemble (linear x0.36, hist_gradient_boosting_tuned x0.27)",
        interrupted=True,
    )
    table, shortened = searches_table([interrupted], "searches", 80)
    console = Console(width=80, record=True)
    console.print(table)
    assert shortened and "INTERRUPTED" in console.export_text()  # whole, not "FINISH" / "(inter"
