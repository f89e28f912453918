from pathlib import Path

import pytest

from training.config import load_config
from training.errors import TrainingError


def test_flags_override_the_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: a\ntarget: t\nsearch:\n  method: grid\n  trials: 3\n")
    cfg = load_config(cfg_file, {"search.method": "bayes", "name": None})
    assert cfg.search.method == "bayes"
    assert cfg.search.trials == 3
    assert cfg.name == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae: x\n", "nmae: unknown key"),
        ("search:\n  trials: many\n", "search.trials"),
        ("task: classification\nobjective:\n  metric: rmse\n", "does not fit task classification"),
        ("- a\n- b\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: Bad Name\n", "name"),
    ],
)
def test_bad_config_gives_one_line_naming_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(TrainingError, match=message) as info:
        load_config(cfg_file, {})
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", {})
