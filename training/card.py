"""The model card: a markdown page for people deciding whether to use a version."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render(manifest: dict[str, Any]) -> str:
    """The model card of a manifest (its JSON object; `version` absent: a version not yet
    published)."""
    m = manifest
    lines = [*_use_and_data_lines(m), *_model_lines(m), *_metric_lines(m)]
    lines += champion_lines(m.get("champion"))
    lines += _fairness_lines(m.get("fairness"))
    lines += mitigation_lines(m.get("mitigation"))
    lines += _explanation_lines(m["explanations"])
    lines += ["", "## Worst slices (test set)"]
    for s in m["error_analysis"]["worst_slices"][:5]:
        lines.append(
            f"- {s['feature']} = {s['slice']}: error {_fmt(s['error'])} on {s['rows']} rows "
            f"(overall {_fmt(s['overall_error'])})"
        )
    lines += [
        "",
        "## Limitations",
        "- Scores hold for data like the training data; the monitoring run watches for drift.",
        "- Data-quality warnings at training time: "
        + (
            ", ".join(f"{f['rule']}({f['column']})" for f in m["data_quality"]["findings"])
            or "none"
        ),
        "",
    ]
    return "\n".join(lines)


def _use_and_data_lines(m: dict[str, Any]) -> list[str]:
    """The title, intended use and the training data."""
    return [
        f"# Model card: {m['name']} v{m['version'] if 'version' in m else '(new)'}",
        "",
        "## Intended use",
        m["config"].get("intended_use")
        or f"Predict `{m['target']}` ({m['task']}) from the {len(m['features'])} input features "
        "below, for the population the training data describes. Not validated for other data.",
        "",
        "## Data",
        f"- Source: `{m['data']['source']}` ({m['data']['rows']} rows, fingerprint "
        f"`{m['data']['fingerprint'][:16]}…`)",
        f"- Split: {m['data']['split']}",
        f"- Features: {', '.join(f['name'] for f in m['features'])}",
        "",
    ]


def _model_lines(m: dict[str, Any]) -> list[str]:
    """The family and how it was chosen, hyperparameters, calibration, decision, ensemble."""
    return [
        "## Model",
        f"- Family: **{m['model']['family']}**, chosen by {m['model']['search']['folds']}-fold "
        f"cross-validation on `{m['objective']['metric']}` among (each family's chosen "
        "configuration's CV score, of its trials): "
        + ", ".join(
            f"{r['family']} ({_fmt(r['cv_score'])}{_configuration(r)} of {r['trials']})"
            for r in m["model"]["candidates"]
        )
        + _rows_note(m),
        *selection_lines(m["model"].get("selection")),
        *cv_lines(m["metrics"].get("cv")),
        f"- Hyperparameters: `{m['model']['params']}`",
        f"- Calibration: {m['model']['calibration']}",
        *decision_lines(m.get("decision")),
        *ensemble_lines(m["model"].get("ensemble")),
        "",
    ]


def _metric_lines(m: dict[str, Any]) -> list[str]:
    """The test metrics beside the trivial baseline's, and the objective."""
    lines = [
        "## Metrics (held-out test set)",
        "| metric | model | trivial baseline |",
        "| --- | --- | --- |",
    ]
    for k, v in m["metrics"]["test"].items():
        lines.append(f"| {k} | {_fmt(v)} | {_fmt(m['metrics']['baseline'].get(k, ''))} |")
    return [
        *lines,
        "",
        f"Objective: `{m['objective']['metric']}` >= {m['objective']['min_test_score']}"
        f" (passed: {m['objective']['passed']})",
        "",
    ]


def _fairness_lines(fairness: dict[str, Any] | None) -> list[str]:
    """Each sensitive attribute's gaps, or why fairness was not measured."""
    lines = ["## Fairness"]
    if not fairness:
        return [*lines, "No sensitive attributes were named; fairness was not measured."]
    for attr, rep in fairness.items():
        gaps = {k: v for k, v in rep.items() if k != "by_group"}
        lines.append(f"- `{attr}`: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in gaps.items()))
    return lines


def _explanation_lines(explanations: dict[str, Any]) -> list[str]:
    """The most important features, and the mean contributions with their plot."""
    lines = ["", "## Most important features (permutation importance, test set)"]
    for k, v in list(explanations["permutation_importance"].items())[:10]:
        lines.append(f"- {k}: {_fmt(v)}")
    shap = explanations.get("shap")
    if not shap:
        return lines
    lines += ["", f"## Feature contributions ({shap['method']}, output: {shap['output']})"]
    if shap.get("note"):
        lines.append(f"_{shap['note']}_")
    for k, v in list(shap["mean_abs_contribution"].items())[:10]:
        lines.append(f"- {k}: mean |contribution| {_fmt(v)}")
    return [*lines, "", "![contributions](shap_summary.png)"]


def champion_lines(champ: dict[str, Any] | None) -> list[str]:
    """The production version against this one, and on which rows."""
    if not champ:
        return []
    lines = ["## Champion comparison"]
    version = champ.get("version")
    if "error" in champ:
        lines.append(f"- v{version} could not be scored: {champ['error']}")
    elif "champion_score" in champ:
        where = {
            "unseen_rows": f"on {champ.get('rows')} test rows neither version trained on",
            "may_include_seen_rows": f"on {champ.get('rows')} test rows, which may include rows "
            f"v{version} trained on",
        }.get(champ.get("comparison", ""), "on the test rows")
        lines.append(
            f"- `{champ['metric']}` {where}: v{version} {_fmt(champ['champion_score'])}, "
            f"this version {_fmt(champ['challenger_score'])}"
        )
    if champ.get("note"):
        lines.append(f"- {champ['note']}")
    return [*lines, ""]


def mitigation_lines(mit: dict[str, Any] | None) -> list[str]:
    """The mitigation's trade-off: test score and gaps with it and without it (issue 20)."""
    if not mit:
        return []
    method = mit["method"]
    how = f" under {mit['constraint']}" if mit.get("constraint") else ""
    lines = [
        "",
        f"Mitigation: **{method}**{how} for `{mit['attribute']}` ({mit['family']}), "
        "against the same model without it, on the same test rows:",
        "",
        f"| | {mit['metric']} (test) | gaps |",
        "| --- | --- | --- |",
    ]
    for name in ("none", method):
        gaps = ", ".join(
            f"{attr}.{k} = {_fmt(v)}"
            for attr, rep in mit[name]["fairness"].items()
            for k, v in rep.items()
        )
        lines.append(f"| {name} | {_fmt(mit[name]['test_score'])} | {gaps} |")
    if method == "postprocess":
        lines.append("")
        lines.append(f"Predictions need `{mit['attribute']}`: its thresholds are per group.")
    return lines


def decision_lines(decision: dict[str, Any] | None) -> list[str]:
    """Which threshold turns the probabilities into the served class, and why (issue 19)."""
    if not decision:
        return []
    threshold = decision.get("threshold")
    positive = decision.get("positive_class")
    if threshold is None:
        how = "the most probable class (argmax)"
    else:
        how = f"`{positive}` when P(`{positive}`) >= **{threshold:g}**, else the other class"
    lines = ["", "## Decision", f"- Predicted class: {how}", f"- Why: {decision.get('why', '')}"]
    if positive is not None:
        lines.append(f"- Positive class (precision, recall, F1): `{positive}`")
    validation = decision.get("validation") or {}
    if validation:
        lines += ["", "| validation rows | precision | recall | F1 |", "| --- | --- | --- | --- |"]
        for name, label in (("threshold", f"threshold {threshold}"), ("argmax", "argmax")):
            row = validation.get(name)
            if row:
                lines.append(
                    f"| {label} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | "
                    f"{_fmt(row['f1'])} |"
                )
    lines += ["", "Probabilities are served unchanged; the threshold decides `prediction` only."]
    return lines


def ensemble_lines(ens: dict[str, Any] | None) -> list[str]:
    """Whether an ensemble of the best families was published, and the validation figures."""
    if not ens or "members" not in ens:
        return []
    verdict = f"**{ens['method']}** published" if ens.get("published") else "not published"
    scores = ", ".join(f"{k} {_fmt(v)}" for k, v in ens["validation"].items())
    return [
        f"- Ensemble of {', '.join(ens['members'])}: {verdict} ({ens['reason']}; validation "
        f"{ens['metric']}: {scores}; lower {ens['confidence']:.0%} bound of the gain: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in ens["lower_gain"].items())
        + ")"
    ]


def _configuration(candidate: dict[str, Any]) -> str:
    """`, its default` or `, tuned`: the noise rule's pick (issue 32; older manifests: nothing)."""
    kept = candidate.get("configuration")
    return {"default": ", its default", "tuned": ", tuned"}.get(kept or "", "")


def selection_lines(selection: dict[str, Any] | None) -> list[str]:
    """How the noise rule chose between families (issue 32; nothing in older manifests)."""
    if not selection or selection["chosen"] == selection["leader"]:
        return []
    return [
        f"- {selection['leader']} scored highest, but {selection['chosen']} is within one paired "
        "standard error of its fold scores and simpler: chosen (a tuned configuration, or a "
        "family, wins only beyond the noise)"
    ]


def cv_lines(cv: dict[str, Any] | None) -> list[str]:
    """The chosen configuration's CV score, labelled as what it is: the best of its trials."""
    if not cv:
        return []
    score = cv.get("best_of_trials", cv.get("score"))
    trials = cv.get("trials")
    of = f"the best of {trials} trials" if trials else "the best of the search's trials"
    return [
        f"- CV score of the chosen configuration: {_fmt(score)} ({of}: optimistic by "
        "selection; the held-out test metrics below are the unbiased figures)"
    ]


def _rows_note(m: dict[str, Any]) -> str:
    """How many training rows the CV scores are on (more than the search's sample when the
    finalists were re-scored on more rows, `search.grow_rows`)."""
    rows = (m["metrics"].get("cv") or {}).get("rows")
    grown = m["model"]["search"].get("grown_rows") or []
    if not rows:
        return ""
    return f" (scores on {rows} rows" + (", re-scored on more rows)" if grown else ")")
