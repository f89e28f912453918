from pathlib import Path

import joblib
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from typer.testing import CliRunner

from servewatch.cli import app
from tests.data import classification_frame

runner = CliRunner()
FAST = ["--models", "linear", "--trials", "1", "--budget-seconds", "5"]


def test_train_from_flags_alone_then_list_show_promote_rollback(
    tmp_path: Path, clf_csv: Path
) -> None:
    reg = str(tmp_path / "reg")
    for _ in range(2):
        res = runner.invoke(
            app,
            [
                "train",
                "--data",
                str(clf_csv),
                "--target",
                "label",
                "--name",
                "m",
                "--registry",
                reg,
                "--promote",
                "always",
                *FAST,
            ],
        )
        assert res.exit_code == 0, res.output
    listed = runner.invoke(app, ["models", "list", "--registry", reg])
    assert listed.exit_code == 0 and "m" in listed.stdout and "production" in listed.stdout
    shown = runner.invoke(app, ["models", "show", "m:1", "--registry", reg])
    assert '"version": 1' in shown.stdout
    assert (
        runner.invoke(
            app, ["models", "promote", "m", "1", "--alias", "staging", "--registry", reg]
        ).exit_code
        == 0
    )
    rolled = runner.invoke(app, ["models", "rollback", "m", "--registry", reg])
    assert rolled.exit_code == 0 and "m@production -> 1" in rolled.output
    assert (
        '"version": 1'
        in runner.invoke(app, ["models", "show", "m@production", "--registry", reg]).stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope"], "target column 'nope' is not in the data"),
        (["--target", "label", "--search", "annealing"], "search.method"),
        (["--target", "label", "--task", "ranking"], "task"),
        (["--target", "label", "--promote", "maybe"], "--promote must be"),
        (
            ["--target", "label", "--time-column", "when", "--time-format", "%d/%m/%Y"],
            "time column 'when': 400 of 400 values cannot be read as times (read %d/%m/%Y), "
            "e.g. '2024-01-01 00:00:00'",
        ),
    ],
)
def test_train_errors_are_one_line_with_nonzero_exit(
    tmp_path: Path, clf_csv: Path, args: list[str], message: str
) -> None:
    reg = tmp_path / "reg"
    res = runner.invoke(
        app, ["train", "--data", str(clf_csv), "--registry", str(reg), *args, *FAST]
    )
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not reg.exists() or not any(reg.rglob("manifest.json"))


def test_models_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["models", "show", "ghost", "--registry", str(tmp_path)])
    assert res.exit_code == 2 and "no model named 'ghost'" in res.output
    res = runner.invoke(app, ["models", "rollback", "ghost", "--registry", str(tmp_path)])
    assert res.exit_code == 2


def test_import_an_existing_pipeline(tmp_path: Path) -> None:
    frame = classification_frame(200)
    x, y = frame[["x1", "color"]], frame["label"]
    pipe = make_pipeline(
        ColumnTransformer(
            [("c", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(x, y)
    joblib.dump(pipe, tmp_path / "p.joblib")
    frame.to_csv(tmp_path / "sample.csv", index=False)
    reg = tmp_path / "reg"
    res = runner.invoke(
        app,
        [
            "models",
            "import",
            str(tmp_path / "p.joblib"),
            "--name",
            "imp",
            "--data",
            str(tmp_path / "sample.csv"),
            "--target",
            "label",
            "--registry",
            str(reg),
        ],
    )
    assert res.exit_code == 0, res.output
    from core.registry import Registry

    m = Registry(reg).manifest("imp", 1)
    assert [f.name for f in m.features] == ["x1", "color"]
    assert m.task == "classification" and m.metrics["sample"]["accuracy"] > 0.6
    bad = runner.invoke(
        app,
        [
            "models",
            "import",
            str(tmp_path / "none.joblib"),
            "--name",
            "x",
            "--data",
            str(tmp_path / "sample.csv"),
            "--target",
            "label",
            "--registry",
            str(reg),
        ],
    )
    assert bad.exit_code == 2 and "no such file" in bad.output
