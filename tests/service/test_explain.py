from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from predlog.store import PredictionStore
from service.config import Settings
from service.inference.model import LoadedModel
from service.main import create_app
from tests.service.conftest import example


def test_explain_returns_contributions_per_input_feature_and_logs(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        preds = check_explain(client)
    ids = {r["id"] for r in PredictionStore(settings.database_url).read_window("demo")}
    assert {p["prediction_id"] for p in preds} <= ids


def check_explain(client: TestClient) -> list[dict[str, Any]]:
    before = (
        REGISTRY.get_sample_value(
            "servewatch_requests_total",
            {"model": "demo", "version": "1", "endpoint": "explain", "status": "200"},
        )
        or 0.0
    )
    res = client.post("/v1/models/demo/explain", json={"instances": [example(), example()]})
    assert res.status_code == 200, res.text
    preds = res.json()["predictions"]
    assert len(preds) == 2
    exp = preds[0]["explanation"]
    assert set(exp["contributions"]) == {"x1", "x2", "color", "group", "when"}
    assert exp["method"] in {"linear_exact", "tree_shap", "sampling_shapley"}
    assert isinstance(exp["base_value"], float)
    assert preds[0]["probabilities"]["yes"] > 0
    after = REGISTRY.get_sample_value(
        "servewatch_requests_total",
        {"model": "demo", "version": "1", "endpoint": "explain", "status": "200"},
    )
    assert after == before + 1
    return preds  # type: ignore[no-any-return]


def test_explain_validates_like_predict(client: TestClient) -> None:
    res = client.post("/v1/models/demo/explain", json={"instances": [{**example(), "x1": "abc"}]})
    assert res.status_code == 422
    assert res.json()["error"]["details"][0]["feature"] == "x1"
    assert client.post("/v1/models/ghost/explain", json={"instances": [{}]}).status_code == 404


def test_explanations_on_the_numpy_path_equal_the_pipelines(settings: Settings) -> None:
    """The service explains on its verified numpy replay of the preprocessing; the numbers must be
    those of the explainer running scikit-learn's fitted preprocessing itself."""
    from core.registry import Registry

    reg = Registry(settings.registry)
    fast = LoadedModel.load(reg, "demo", 1)
    slow = LoadedModel.load(reg, "demo", 1, fast_path=False)
    assert fast.serving.pre is not None and slow.serving.pre is None
    cols = {k: [v, v] for k, v in example().items()}
    cols["x1"][1] = None  # a missing value, imputed by both
    assert fast.explain_columns(cols) == slow.explain_columns(cols)


def test_the_explainer_never_reads_the_reference_sample_again_after_its_check(
    settings: Settings,
) -> None:
    """The background comes from the bytes hashed at load: a reference.parquet replaced on disk
    afterwards (here: garbage) is never read (before: the explainer re-read the file)."""
    from core.registry import Registry

    model = LoadedModel.load(Registry(settings.registry), "demo", 1)
    (model.path / "reference.parquet").write_bytes(b"not a parquet file")
    columns = {k: [v] for k, v in example().items()}
    (got,) = model.explain_columns(columns)
    assert set(got["contributions"]) == {"x1", "x2", "color", "group", "when"}
