"""One line per pipeline stage of a finished job: what the stage did, or why it did not run.

Read from the job and its event log as the API shows them (GET /v1/jobs/{id} and /events), so the demo can
print it and a test can hold the demo to it.
"""

from __future__ import annotations

from typing import Any

STAGES = ("fetch", "validate", "lr sweep", "head", "unfrozen", "evaluate", "deploy")
SKIPPED = "skipped: "


def _first(events: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((e for e in events if e["kind"] == kind), None)


def _sweep(job: dict[str, Any]) -> str:
    sweep = job.get("lr_sweep") or {}
    if sweep.get("method") == "user":
        return f"{SKIPPED}the job set lr={sweep['chosen_lr']:.3g}"
    if not sweep:
        return "did not run"
    steps = f", {sweep['steps']} steps in {sweep['seconds']:.2f}s" if "steps" in sweep else ""
    return f"{sweep.get('method', 'range test')}{steps} on cached features: lr {sweep['chosen_lr']:.2e}"


def _head(job: dict[str, Any]) -> str:
    frozen = [e for e in job["metrics"] if e["stage"] == "frozen"]
    if not frozen:
        return f"{SKIPPED}freeze_epochs=0"
    last = frozen[-1]
    return (
        f"{len(frozen)} epoch(s) on cached backbone features: valid_loss {last['valid_loss']:.3f}, "
        f"accuracy {last['accuracy']:.1%}"
    )


def _unfrozen(job: dict[str, Any], events: list[dict[str, Any]]) -> str:
    if skipped := _first(events, "unfreeze_skipped"):
        return SKIPPED + skipped["message"]
    unfrozen = [e for e in job["metrics"] if e["stage"] == "unfrozen"]
    trial, stop = _first(events, "unfreeze_trial"), _first(events, "early_stop")
    if not unfrozen:
        return SKIPPED + (stop or trial or {"message": "no unfrozen epoch ran"})["message"]
    world = (job.get("training") or {}).get("world_size", "?")
    losses = " -> ".join(f"{e['valid_loss']:.3f}" for e in unfrozen)
    line = (
        f"Ray Train DDP on {world} workers, {len(unfrozen)} epoch(s): valid_loss {losses}, "
        f"accuracy {unfrozen[-1]['accuracy']:.1%}"
    )
    return line + (f"; {stop['message']}" if stop else "")


def _evaluate(job: dict[str, Any]) -> str:
    evaluation, best = job.get("evaluation") or {}, job.get("best") or {}
    if not evaluation:
        return "did not run"
    images = sum(map(sum, evaluation.get("confusion_matrix") or []))
    return (
        f"accuracy {evaluation['accuracy']:.1%} on {images} validation images; kept the {best.get('stage')} model "
        f"of epoch {best.get('epoch')}"
    )


def _deploy(job: dict[str, Any]) -> str:
    if not job["params"].get("deploy", True):
        return f"{SKIPPED}deploy=false"
    model = job.get("model")
    return f"model {model['id']} behind Ray Serve: POST {model['predict_url']}" if model else "did not run"


def stage_results(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, str]:
    """Each stage of `STAGES` -> its one-line result; a stage that did not run says why ("skipped: …")."""
    fetched, validated = _first(events, "fetched"), _first(events, "validated")
    return {
        "fetch": fetched["message"] if fetched else "did not run",
        "validate": validated["message"] if validated else "did not run",
        "lr sweep": _sweep(job),
        "head": _head(job),
        "unfrozen": _unfrozen(job, events),
        "evaluate": _evaluate(job),
        "deploy": _deploy(job),
    }
