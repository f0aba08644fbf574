"""`lr_sweep` and `tta` in POST /v1/jobs: accepted as documented, refused with the field to fix."""

from __future__ import annotations

import pytest

from tests.utils.api_server import Api

BODY = {"dataset_uri": "s3://bucket/pets"}


def test_defaults_are_the_range_test_valley_and_no_tta(api: Api) -> None:
    job = api.http.post("/v1/jobs", json=BODY).json()
    assert job["params"]["lr_sweep"] == {"method": "range_test", "suggestion": "valley"}
    assert job["params"]["tta"] is False


def test_trials_sweep_is_accepted_with_its_defaults_filled_in(api: Api) -> None:
    response = api.http.post("/v1/jobs", json=BODY | {"lr_sweep": {"method": "trials", "trials": 6}, "tta": True})
    assert response.status_code == 202, response.text
    sweep = response.json()["params"]["lr_sweep"]
    assert sweep == {"method": "trials", "trials": 6, "min_lr": 1e-5, "max_lr": 1e-1, "epochs": 4, "grace_epochs": 1}


@pytest.mark.parametrize(
    ("sweep", "field", "says"),
    [
        ({"method": "grid"}, "lr_sweep", "'range_test', 'trials'"),
        ({"method": "range_test", "suggestion": "lowest"}, "lr_sweep.range_test.suggestion", "'slide'"),
        ({"method": "trials", "trials": 1}, "lr_sweep.trials.trials", "≥ 2"),
        ({"method": "trials", "min_lr": 0.1, "max_lr": 0.01}, "lr_sweep.trials.max_lr", "must be above min_lr"),
        ({"method": "trials", "epochs": 2, "grace_epochs": 3}, "lr_sweep.trials.grace_epochs", "at most epochs"),
        ({"method": "trials", "suggestion": "valley"}, "lr_sweep.trials.suggestion", "unknown field"),
    ],
)
def test_bad_sweeps_name_the_field(api: Api, sweep: dict[str, object], field: str, says: str) -> None:
    response = api.http.post("/v1/jobs", json=BODY | {"lr_sweep": sweep})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert says in error["message"]
