"""The labelling page refuses what a hostile web page or network could send: another Host (DNS
rebinding), a cross-site POST, an /api/ call without the page's token, a huge body, a body that is
not a JSON object. None of them changes the labels file."""

from __future__ import annotations

import re

import pytest

import bench  # noqa: F401
from bench.labelling import render
from tests.test_labelling import BALLRUN, _open


@pytest.fixture
def client(sim_dataset, tmp_path):
    from bench.feedback import dataset_hash
    from bench.labelling.app import Context, FrameCache, create_app

    geometry = render.geometry_for(BALLRUN)
    frames = FrameCache(tmp_path / "cache", sim_dataset, geometry, dataset_hash(sim_dataset))
    store = _open(sim_dataset, tmp_path / "labels.csv")
    context = Context(task="BallRun", threshold=20.0, segment_length=20, episode_length=BALLRUN.episode_length,
                      budget=1.0, dataset=str(sim_dataset.path), rules=geometry.describe(), view=frames.view_name)
    app = create_app(store, frames, context, host="127.0.0.1")
    with app.test_client() as test_client:
        test_client.store = store  # type: ignore[attr-defined]
        yield test_client
    store.close()
    frames.close()


BASE = "http://127.0.0.1:8765"


def _token(client) -> dict[str, str]:
    page = client.get("/", base_url=BASE).get_data(as_text=True)
    return {"X-Presa-Token": re.search(r'name="presa-token" content="([^"]+)"', page).group(1)}


def _answer(client, headers, body=None):  # type: ignore[no-untyped-def]
    query = client.get("/api/state", base_url=BASE, headers=headers).get_json()["query"]
    answer = "left" if query["kind"] == "preference" else "safe"
    return client.post("/api/answer", base_url=BASE, headers=headers, json=body or {"id": query["id"], "answer": answer})


def test_the_page_carries_a_token_and_api_calls_need_it(client):
    auth = _token(client)
    assert _answer(client, auth).status_code == 200 and client.store.answered() == 1
    assert client.get("/api/state", base_url=BASE).status_code == 403
    assert client.post("/api/undo", base_url=BASE).status_code == 403
    assert client.post("/api/undo", base_url=BASE, headers={"X-Presa-Token": "guess"}).status_code == 403
    assert client.store.answered() == 1
    assert client.post("/api/undo", base_url=BASE, headers=auth).status_code == 200 and client.store.answered() == 0


def test_cross_site_posts_are_refused(client):
    auth = _token(client)
    _answer(client, auth)
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = client.post("/api/undo", base_url=BASE, headers={**auth, **headers})
        assert response.status_code == 403, headers
    assert client.store.answered() == 1
    same_origin = client.post("/api/undo", base_url=BASE, headers={**auth, "Origin": BASE})
    assert same_origin.status_code == 200 and client.store.answered() == 0


def test_another_host_header_is_refused(client):
    """DNS rebinding: evil.example resolving to 127.0.0.1 reaches the server with its own Host."""
    assert client.get("/", base_url="http://evil.example:8765").status_code == 403
    assert client.get("/api/state", base_url="http://evil.example:8765", headers=_token(client)).status_code == 403
    assert client.get("/", base_url="http://localhost:8765").status_code == 200
    assert client.get("/", base_url="http://[::1]:8765").status_code == 200


def test_bodies_are_limited_and_validated(client):
    auth = _token(client)
    big = client.post("/api/answer", base_url=BASE, headers={**auth, "Content-Type": "application/json"},
                      data=b'{"id": "' + b"x" * (300 * 1024) + b'"}')
    assert big.status_code == 413
    for body in ([1, 2], "p0", 7, {"id": ["p0"], "answer": "0"}, {"id": "p0"}):
        response = client.post("/api/answer", base_url=BASE, headers=auth, json=body)
        assert response.status_code == 400, body
        assert "JSON object" in response.get_json()["error"]
    assert client.store.answered() == 0
