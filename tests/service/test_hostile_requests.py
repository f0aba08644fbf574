"""Requests an attacker (or a broken client) sends: oversized, undecodable, out-of-range. Over real HTTP.

Each answers a 4xx in the standard error shape naming the field at fault; none reaches the store or a 500.
(Idempotency-Key replays with another body: tests/service/test_jobs_api.py; oversized images:
tests/service/test_models_api.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.utils.api_server import Api, ApiFactory


def _padded_job(size: int) -> bytes:
    # A valid job whose `name` pads it to `size` bytes: only its size is wrong.
    head, tail = b'{"dataset_uri": "s3://bucket/pets", "name": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_an_oversized_json_body_is_413_before_it_is_read(make_api: ApiFactory) -> None:
    api = make_api(max_request_bytes=4096)
    response = api.http.post("/v1/jobs", content=_padded_job(4097), headers={"content-type": "application/json"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("payload_too_large", "body")
    assert "4096 bytes" in error["message"]
    assert api.store.list_jobs() == []
    # At the limit it is a job like any other (the name is then too long: a 422, not a 413).
    assert (
        api.http.post("/v1/jobs", content=_padded_job(4096), headers={"content-type": "application/json"}).status_code
        == 422
    )


def test_an_oversized_chunked_body_is_413(make_api: ApiFactory) -> None:
    api = make_api(max_request_bytes=4096)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count what arrives
        body = _padded_job(64 * 1024)
        yield from (body[i : i + 1024] for i in range(0, len(body), 1024))

    response = api.http.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert api.store.list_jobs() == []


def test_a_job_sent_as_an_image_is_capped_at_the_upload_limit(make_api: ApiFactory) -> None:
    api = make_api(max_image_bytes=1024)
    response = api.http.post("/v1/jobs", content=b"\0" * 200_000, headers={"content-type": "image/png"})
    assert response.status_code == 413


def test_a_body_that_is_not_utf8_is_400_naming_the_body(api: Api) -> None:
    response = api.http.post(
        "/v1/jobs", content=b'{"dataset_uri": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "unreadable_body",
        "message": "the request body could not be read; send a UTF-8 JSON object with Content-Type: application/json",
        "field": "body",
    }


def test_an_event_id_beyond_64_bits_is_422_not_a_database_overflow(api: Api) -> None:
    job = api.create_job()
    response = api.http.get(f"/v1/jobs/{job['id']}/events", params={"after": 2**63})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "after"
    assert api.http.get(f"/v1/jobs/{job['id']}/events", params={"after": 2**63 - 1}).json() == {"events": []}


def test_hostile_ids_in_paths_are_plain_404s(api: Api) -> None:
    for job_id in ("..%2F..%2Fetc%2Fpasswd", "%00", "x" * 5000, "%F0%9F%92%A3' OR 1=1 --"):
        response = api.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404, (job_id, response.text)
        assert response.json()["error"]["code"] in ("job_not_found", "not_found")
