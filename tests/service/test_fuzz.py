"""Fuzzing a live server (uvicorn): schemathesis on every documented operation, its stateful mode
along the OpenAPI links (predict -> feedback -> model), and hostile inputs from custom Hypothesis
strategies in every place a request carries a value. No 5xx, every response as documented.
`make test` runs a few examples of each (about a minute); `make fuzz` many more
(SERVEWATCH_FUZZ_EXAMPLES). SERVEWATCH_FUZZ_URL points the run at a server already running (the
demo model, feedback token below); SERVEWATCH_FUZZ_REPORT writes the hostile run's figures."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.service.conftest import ADMIN, Server

EXAMPLES = int(os.environ.get("SERVEWATCH_FUZZ_EXAMPLES", "15"))
FEEDBACK = "feedback-token-0123456789"


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, trained_registry: Path
) -> Iterator[Server]:
    given_url = os.environ.get("SERVEWATCH_FUZZ_URL")
    if given_url:
        outside = Server.__new__(Server)
        outside.url = given_url
        yield outside
        return
    root = tmp_path_factory.mktemp("fuzz")
    registry = root / "registry"
    shutil.copytree(trained_registry, registry)
    server = Server(
        {
            "SERVEWATCH_REGISTRY": str(registry),
            "SERVEWATCH_DATABASE_URL": f"sqlite:///{root}/log.db",
            "SERVEWATCH_SPOOL_DIR": str(root / "spool"),
            "SERVEWATCH_ADMIN_TOKEN": ADMIN,
            "SERVEWATCH_FEEDBACK_TOKEN": FEEDBACK,
            "SERVEWATCH_MONITOR_INTERVAL": "0",
        }
    )
    yield server
    server.stop()


def fuzz(op: Any, headers: dict[str, str]) -> None:
    """Hypothesis examples for one operation; raises on the first failing check."""

    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=EXAMPLES <= 50,  # make test: the same examples every run; make fuzz: new ones
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers)

    check()


def test_api_never_fails_and_matches_its_schema(live_server: Server) -> None:
    """Every operation: generated requests (valid and not) never get a 5xx or an undocumented
    response. Driven through Hypothesis directly (schemathesis' pytest plugin and pytest 9 do not
    agree yet)."""
    api = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    failures = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 8
    for op in operations:
        headers = {}
        if "reload" in op.path:
            headers = {"authorization": f"Bearer {ADMIN}"}
        elif "feedback" in op.path:
            headers = {"authorization": f"Bearer {FEEDBACK}"}
        try:
            fuzz(op, headers)
        except BaseException as exc:  # collect every operation's failures, then report them
            failures.append(f"{op.method.upper()} {op.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


# --- stateful: predict -> feedback -> model, along the OpenAPI links ---------------------------


def test_stateful_predict_then_feedback_then_model(live_server: Server) -> None:
    """Schemathesis' state machine follows the document's links: a prediction's id and answer
    become a feedback label, then the model is described; generated bodies around them. No 5xx,
    every response as documented."""
    api = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    machine = api.include(
        path_regex=r"^/v1/models/\{name\}(/predict|/feedback)?$"
    ).as_state_machine()

    seen: Counter[tuple[str, int]] = Counter()

    class Stateful(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"authorization": f"Bearer {FEEDBACK}"}}

        def before_call(self, case: Any) -> None:
            # the served model (the per-operation run fuzzes names); every other predict body
            # valid, so that predictions are made and their links followed
            super().before_call(case)
            if case.path_parameters is not None and "name" in case.path_parameters:
                case.path_parameters["name"] = "demo"
            if case.path.endswith("/predict") and sum(seen.values()) % 2 == 0:
                case.body = {"instances": [VALID]}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # a body valid for the document may break the model's own schema (its features):
            # a 422 then is right, so "valid data must be accepted" is not checked here
            case.validate_response(
                response, excluded_checks=[positive_data_acceptance], transport_kwargs=kwargs
            )

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            seen[(case.path, response.status_code)] += 1

    Stateful.run(
        settings=settings(
            max_examples=max(5, EXAMPLES // 2),
            stateful_step_count=4,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=EXAMPLES <= 50,
        )
    )
    # the links were followed: a predicted id was accepted as feedback
    assert seen[("/v1/models/{name}/feedback", 200)] >= 1, seen


# --- hostile inputs, over HTTP ------------------------------------------------------------------

VALID = {"x1": 0.5, "x2": 3.0, "color": "red", "group": "a", "when": "2024-02-01T10:00:00"}


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "1.0" + "]" * depth
    return '{"a":' * depth + "1.0" + "}" * depth


# Each a (kind, JSON text): what a hostile client sends where a value goes.
FRAGMENTS = st.one_of(
    st.tuples(
        st.just("deep"),
        st.builds(
            deep,
            st.sampled_from([64, 255, 256, 999, 1000, 1023, 1024, 1100]),
            st.sampled_from(["list", "dict"]),
        ),
    ),  # fmt: skip
    st.tuples(
        st.just("huge number"),
        st.sampled_from(
            [
                "1e39",
                "-1e39",
                "3.4028236e38",
                "1e308",
                "1.7976931348623157e308",
                "1e309",
                "-1e999",
                "5e-324",
                "1e-400",
                "-0.0",
                "18446744073709551616",
                "-9223372036854775809",
                "1" + "0" * 400,
                "123456789012345678901234567890",
            ]
        ),
    ),  # fmt: skip
    st.tuples(
        st.just("long list"),
        st.sampled_from(
            [
                "[" + ",".join(["1000000000000000000"] * 20_000) + "]",
                "[" + ",".join(["0"] * 100_000) + "]",
                "[" + ",".join(['"x"'] * 50_000) + "]",
            ]
        ),
    ),  # fmt: skip
    st.tuples(st.just("non-finite"), st.sampled_from(["NaN", "Infinity", "-Infinity", "nan"])),
    st.tuples(
        st.just("unicode digits"),
        st.sampled_from(['"²"', '"٣"', '"１２"', '"1_000"', '"⅕"', '"𝟙"', '"0x1p3"']),
    ),
    st.tuples(
        st.just("NUL or surrogate"),
        st.sampled_from(
            ['"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"']
        ),
    ),
    st.tuples(
        st.just("long or upper-case id"),
        st.sampled_from(
            [
                '"' + "A" * 32 + '"',
                '"' + "F" * 31 + 'g"',
                '"' + "0" * 5000 + '"',
                '"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"',
                '"ffffffffffff' + "0" * 20 + '"',
                '""',
            ]
        ),
    ),  # fmt: skip
    st.tuples(st.just("text"), st.text(max_size=40).map(json.dumps)),
    st.tuples(
        st.just("json"),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=6,
        ).map(lambda v: json.dumps(v)),
    ),  # fmt: skip
)


def _v2_inputs(fragment: str, where: str, dupes: int) -> str:
    inputs = [
        {
            "name": n,
            "datatype": "BYTES" if isinstance(v, str) else "FP64",
            "shape": [1],
            "data": [v],
        }
        for n, v in VALID.items()
    ]
    text = [json.dumps(i) for i in inputs]
    if where == "data":
        text[0] = text[0].replace("[0.5]", fragment)
    elif where == "element":
        text[0] = text[0].replace("[0.5]", "[" + fragment + "]")
    elif where == "shape":
        text[0] = text[0].replace('"shape": [1]', '"shape": ' + fragment)
    elif where == "datatype":
        text[0] = text[0].replace('"FP64"', fragment)
    else:  # name
        text[0] = text[0].replace('"x1"', fragment)
    text += [text[1]] * dupes  # duplicate names
    return '{"inputs": [' + ", ".join(text) + "]}"


# (route, how a fragment goes in): method, path, body template or None, headers
TARGETS = [
    "v1 predict: a feature's value",
    "v1 predict: an instance",
    "v1 predict: the instances",
    "v1 explain: a feature's value",
    "v1 feedback: a prediction id",
    "v1 feedback: a label",
    "v2 infer: tensor data",
    "v2 infer: a tensor element",
    "v2 infer: a shape",
    "v2 infer: a datatype",
    "v2 infer: an input name",
    "v2 infer: binary header length",
    "v2: a version in the path",
    "v1: a model name in the path",
]


def request_for(
    target: str, fragment: str, feature: str, dupes: int
) -> tuple[str, str, Any, dict[str, Any]]:
    """(method, path, body bytes or None, headers) placing `fragment` as `target` says."""
    json_type: dict[str, Any] = {"content-type": "application/json"}
    instance = json.dumps(VALID)
    with_value = instance.replace(json.dumps(VALID[feature]), fragment, 1)
    if target.startswith("v1 predict") or target.startswith("v1 explain"):
        route = "explain" if "explain" in target else "predict"
        if "feature" in target:
            body = '{"instances": [' + with_value + "]}"
        elif "an instance" in target:
            body = '{"instances": [' + instance + ", " + fragment + "]}"
        else:
            body = '{"instances": ' + fragment + "}"
        return "POST", f"/v1/models/demo/{route}", body.encode(), json_type
    if target.startswith("v1 feedback"):
        auth = {**json_type, "authorization": f"Bearer {FEEDBACK}"}
        if "id" in target:
            body = '{"labels": [{"prediction_id": ' + fragment + ', "label": "yes"}]}'
        else:
            body = (
                '{"labels": [{"prediction_id": "0190aaaabbbbccccddddeeeeffff0000", "label": '
                + fragment
                + "}]}"
            )
        return "POST", "/v1/models/demo/feedback", body.encode(), auth
    if target.startswith("v2 infer"):
        if "header" in target:
            body = _v2_inputs("[0.5]", "data", 0).encode()
            value = json.loads(fragment) if fragment.startswith('"') else fragment
            text = "".join(c for c in str(value) if c >= " " and c != "\x7f")[:200]
            try:  # a header travels as bytes: "²" as the one byte 0xB2, "٣" as its UTF-8
                header = text.encode("latin-1")
            except UnicodeEncodeError:
                header = text.encode("utf-8", "surrogatepass")
            return (
                "POST",
                "/v2/models/demo/infer",
                body + b"\x00\x01",
                {**json_type, "inference-header-content-length": header},
            )
        where = target.rsplit(" ", 1)[-1]  # data, element, shape, datatype or name
        return (
            "POST",
            "/v2/models/demo/infer",
            _v2_inputs(fragment, where, dupes).encode(),
            json_type,
        )
    segment = urllib.parse.quote(
        fragment.strip('"')[:300].encode("utf-8", "surrogatepass"), safe=""
    )
    if target.startswith("v2"):
        return "GET", f"/v2/models/demo/versions/{segment or '0'}/ready", None, {}
    return "GET", f"/v1/models/{segment or 'x'}", None, {}


def test_hostile_inputs_never_get_a_5xx(live_server: Server) -> None:
    """Deep nesting, huge and non-finite numbers, Unicode digits, NUL and surrogates, long and
    upper-case ids, duplicate names, in every place a request carries a value: each answer is
    under 500. Every 5xx is collected (with the kind of input and the place) before failing, so
    the figures in docs/reliability.md count distinct failures, not the first one."""
    sent: Counter[int] = Counter()
    failures: dict[tuple[str, str], str] = {}
    last: list[Any] = []
    timeout = float(os.environ.get("SERVEWATCH_FUZZ_TIMEOUT", "60"))  # past it: a failure
    with httpx.Client(base_url=live_server.url, timeout=timeout) as client:

        @given(
            target=st.sampled_from(TARGETS),
            fragment=FRAGMENTS,
            feature=st.sampled_from(sorted(VALID)),
            dupes=st.sampled_from([0, 0, 1, 200, 5000]),
        )
        @settings(
            max_examples=EXAMPLES * 20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=EXAMPLES <= 50,
        )
        def hostile(target: str, fragment: tuple[str, str], feature: str, dupes: int) -> None:
            kind, text = fragment
            method, path, body, headers = request_for(target, text, feature, dupes)
            prev = last[:]
            last[:] = [(method, path[:80], (body or b"")[:150], headers)]
            try:
                res = client.request(method, path, content=body, headers=headers)
                status = res.status_code
            except httpx.LocalProtocolError:  # the client refuses to send it: not a request
                return
            except httpx.HTTPError as exc:  # a reset connection counts as a failure
                status, res = 599, None
                why = f"{type(exc).__name__} on {text[:80]!r} after {prev}"
                failures.setdefault((target, kind), why)
            sent[status] += 1
            if status >= 500 and res is not None:
                failures.setdefault((target, kind), f"{status} on {text[:80]!r}: {res.text[:200]}")

        hostile()
    record = {"requests": sum(sent.values()), "statuses": dict(sent), "failures": len(failures)}
    out = os.environ.get("SERVEWATCH_FUZZ_REPORT")
    if out:
        Path(out).write_text(
            json.dumps({**record, "distinct": sorted(map(list, failures))}, indent=1)
        )
    assert not failures, "\n".join(f"{t} / {k}: {v}" for (t, k), v in sorted(failures.items()))
