"""The settings a benchmark ran under, and the notes that explain its figures."""

from __future__ import annotations

from collections.abc import Mapping

from onnxslim.runtime import resolve_providers


def provider_options_for(
    provider: str, provider_options: Mapping[str, Mapping[str, object]] | None
) -> dict | None:
    if not provider_options:
        return None
    for key, options in provider_options.items():
        if resolve_providers([key])[0] == provider:
            return dict(options)
    return None


def _notes(allow_spinning: bool, memory_method: str) -> list[str]:
    notes = []
    if allow_spinning:
        notes.append(
            "WARNING: thread spinning was ON: sessions steal cores from each other, ratios are unreliable"
        )
    notes.append(
        "models run interleaved in one process (one run of each per round, order rotated every "
        "round); latency ratios are taken round by round"
    )
    if not allow_spinning:
        notes.append(
            "ORT thread spinning is off (session.intra_op.allow_spinning=0) so an idle session "
            "cannot steal cores from the timed one"
        )
    notes.append(
        "memory: each session is created and warmed up alone; its figure is the peak RSS "
        "increase over that window (" + memory_method + ")"
    )
    return notes


def settings_record(
    providers: list[str],
    provider_options: Mapping[str, Mapping[str, object]] | None,
    batches: list[int],
    data_fidelity_samples: int | None,
    memory_method: str,
    *,
    intra_op_threads: int | None,
    inter_op_threads: int | None,
    optimization_level: str,
    warmup: int,
    runs: int | None,
    time_budget_s: float | None,
    fidelity_samples: int,
    allow_spinning: bool,
) -> dict:
    """The settings record: what was asked for and how it was measured."""
    return {
        "providers": providers,
        "provider_options": {
            provider: provider_options_for(provider, provider_options) or {}
            for provider in providers
        },
        "batch_sizes": batches,
        "intra_op_threads": intra_op_threads,
        "inter_op_threads": inter_op_threads,
        "optimization_level": optimization_level,
        "warmup_runs": warmup,
        "runs": runs,
        "time_budget_s": time_budget_s,
        "inputs": "data" if data_fidelity_samples is not None else "generated",
        "fidelity_samples": data_fidelity_samples
        if data_fidelity_samples is not None
        else fidelity_samples,
        "interleaved": True,
        "allow_spinning": allow_spinning,
        "memory_method": memory_method,
        "notes": _notes(allow_spinning, memory_method),
    }
