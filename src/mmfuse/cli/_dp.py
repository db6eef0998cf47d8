"""The privacy options of ``run`` and ``train``: the encoder defaults of ``--epsilon`` and
``--scrub-pii``, and the differentially private evaluation."""

from __future__ import annotations

from typing import Any, Optional

from ._common import _Progress, _parse_strategies, _write_outputs, console, print_results


def _dp_spec(spec: Any, explicit: Any, epsilon: Optional[float], scrub_pii: bool,
                  saving: bool) -> Any:
    """The encoder spec with the privacy defaults: text is encoded with ``hashing`` under
    --epsilon and with ``tfidf-hashed`` when a model is saved (unless --encoders names one);
    with ``scrub_pii`` the text encoders become instances that scrub PII."""
    if not isinstance(spec, dict):
        if scrub_pii and not saving:
            from .._errors import InputError

            raise InputError("--scrub-pii needs raw text and named encoders: not with --views "
                             "or --encoders auto (name them, e.g. --encoders text=minilm)")
        return spec
    spec = dict(spec)
    if "text" in spec and not (isinstance(explicit, dict) and "text" in explicit):
        if epsilon is not None:
            spec["text"] = "hashing"
        elif saving:
            spec["text"] = "tfidf-hashed"
    if scrub_pii:
        from .._errors import InputError
        from ..encoders import create_encoder

        for col, name in spec.items():
            if name == "passthrough":
                continue
            if not isinstance(name, str) or "/" in name or name == "auto" or isinstance(
                    name, list):
                raise InputError("--scrub-pii with `mmfuse run` needs one named encoder per "
                                 "column (not a candidate list or auto)")
            enc = create_encoder(name)
            if enc.modality == "text":
                if not enc.scrubs_pii:
                    raise InputError(f"--scrub-pii: encoder {enc.name!r} of column {col!r} "
                                     f"does not support scrubbing")
                enc.scrub_pii = True
                spec[col] = enc
    return spec


def _evaluate_dp_and_print(X, y, groups, encoder_spec, fusion, weights, cv_spec, seed,
                                on_error, json_out, report, quiet, title, epsilon,
                                missing, delta=1e-5, pooling="mean") -> Any:
    from .._errors import InputError
    from ..evaluate import FeatureTable
    from ..evaluate.dp import evaluate_dp
    from ..privacy.dp import private_fusions

    if missing:
        raise InputError("--missing is not available with --epsilon")
    strategies = _parse_strategies(fusion)
    if fusion == "early,weighted,late,stacking":  # the default: the DP-capable ones
        strategies = private_fusions()
    if weights == "cv":
        weights = "equal"
    with _Progress(quiet) as bar:
        table = FeatureTable(X, encoder_spec, on_error, bar, pooling=pooling)
        result = evaluate_dp(X, y, epsilon=epsilon, delta=delta, features=table,
                                  groups=groups,
                                  strategies=strategies, weights=weights, cv=cv_spec,
                                  random_state=seed, on_error=on_error)
    print_results(result, f"{title}, differential privacy epsilon={epsilon:g}, delta={delta:g}")
    console.print("DP: data-independent encoders, unit-norm rows, fixed weights, noisy class "
                  "directions (diffprivlib mechanisms); one model per training fold, each "
                  "with the whole budget", markup=False, highlight=False)
    _write_outputs(result, json_out, report, f"{title} (epsilon={epsilon:g})")
    return result
