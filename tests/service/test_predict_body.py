"""Predict reads an image whatever the Content-Type says, by its bytes; only JSON and multipart keep their meaning.

Over real HTTP to the API, with the model server played by `FakeServe` (it records what the API forwarded).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from service_testkit import Api, ApiFactory, serve
from test_models_api import MODEL_ID, FakeServe, add_model, error_of

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp", "WEBP": "image/webp"}
FORMATS["TIFF"] = "image/tiff"
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}  # what `curl --data-binary` sends by default


def _image(fmt: str, size: int = 32) -> bytes:
    noise = random.Random(0).randbytes(size * size * 3)  # noise: JPEG cannot squeeze it below the JSON cap
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), noise).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def fake_serve() -> FakeServe:
    return FakeServe()


@pytest.fixture
def api(s3: Any, make_api: ApiFactory, fake_serve: FakeServe) -> Iterator[Api]:
    with serve(fake_serve.app) as serve_url:
        api = make_api(serve_url=serve_url, max_image_bytes=1024 * 1024)
        add_model(api, s3=s3)
        yield api


def test_each_image_format_is_recognised_by_its_bytes(api: Api, fake_serve: FakeServe) -> None:
    for fmt, media_type in FORMATS.items():
        body = _image(fmt)
        for headers in (URLENCODED, {"content-type": "text/plain"}, {"content-type": "application/octet-stream"}, {}):
            response = api.http.post(f"/v1/models/{MODEL_ID}/predict", content=body, headers=headers)
            assert response.status_code == 200, (fmt, headers, response.text)
            # Forwarded as what it is, so the model server (which checks types too) takes it.
            assert (fake_serve.calls[-1]["content_type"], fake_serve.calls[-1]["body"]) == (media_type, body)


def test_a_photo_larger_than_the_json_limit_is_capped_at_the_image_limit(api: Api, fake_serve: FakeServe) -> None:
    photo = _image("JPEG", 400)
    assert api.settings.max_request_bytes < len(photo) < api.settings.max_image_bytes
    response = api.http.post(f"/v1/models/{MODEL_ID}/predict", content=photo, headers=URLENCODED)
    assert response.status_code == 200, response.text
    assert fake_serve.calls[-1]["content_type"] == "image/jpeg"

    too_large = b"\xff\xd8\xff" + bytes(api.settings.max_image_bytes)
    refused = api.http.post(f"/v1/models/{MODEL_ID}/predict", content=too_large, headers=URLENCODED)
    assert refused.status_code == 413
    assert f"{api.settings.max_image_bytes} bytes" in error_of(refused)["message"]


def test_a_body_that_is_not_an_image_is_415_saying_what_came_and_what_to_send(api: Api, fake_serve: FakeServe) -> None:
    for headers, sent in ((URLENCODED, "Content-Type application/x-www-form-urlencoded"), ({}, "no Content-Type")):
        response = api.http.post(f"/v1/models/{MODEL_ID}/predict", content=b"name=cat&photo=cat.jpg", headers=headers)
        assert response.status_code == 415, response.text
        error = error_of(response)
        assert (error["code"], error["field"]) == ("unsupported_media_type", "body")
        assert f"received 22 bytes with {sent}, beginning b'name=cat&pho'" in error["message"]
        assert "not a JPEG, PNG, GIF, BMP, WebP or TIFF image" in error["message"]
        assert "curl --data-binary @photo.jpg" in error["message"] and "-F file=@photo.jpg" in error["message"]
    # A multipart file part sent as text/plain is looked at the same way.
    part = api.http.post(f"/v1/models/{MODEL_ID}/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert part.status_code == 415 and "Content-Type text/plain" in error_of(part)["message"]
    assert fake_serve.calls == []
    with_part = api.http.post(f"/v1/models/{MODEL_ID}/predict", files={"file": ("cat", _image("PNG"), "text/plain")})
    assert with_part.status_code == 200 and fake_serve.calls[-1]["content_type"] == "image/png"
