"""/v1/control/vectors: upload (JSON, safetensors), list, get, delete; admin-only writes;
artifacts written elsewhere are served without a restart."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from conftest import ADMIN_KEY, API_KEY, MODEL_NAME

pytestmark = pytest.mark.engine


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _json_vector(name, layers=(5,), hidden=576, value=0.5):
    return {"name": name, "directions": {str(la): [value] * hidden for la in layers},
            "metadata": {"method": "test", "provenance": {"by": "test"}}}


def _steer(server, name, scale=2.0):
    r = server.client().chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "Describe your home."}],
        max_tokens=8, temperature=0, extra_body={"control": {"steer": [
            {"vector": name, "scale": scale}]}})
    return r.choices[0].message.content


def test_upload_list_get_use_delete(server):
    url = server.base_url + "/v1/control/vectors"
    r = httpx.post(url, json=_json_vector("api-vec", layers=(4, 5)), headers=_h(ADMIN_KEY))
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["layers"] == [4, 5] and info["method"] == "test"
    assert info["fingerprint"]["hidden_size"] == 576
    listed = httpx.get(url, headers=_h(API_KEY)).json()["data"]
    assert "api-vec" in [v["id"] for v in listed]
    assert httpx.get(f"{url}/api-vec", headers=_h(API_KEY)).json()["sha256"] == info["sha256"]
    assert _steer(server, "api-vec")  # usable at once
    assert httpx.post(url, json=_json_vector("api-vec"), headers=_h(ADMIN_KEY)).status_code == 409
    assert httpx.delete(f"{url}/api-vec", headers=_h(ADMIN_KEY)).json()["deleted"] is True
    assert httpx.get(f"{url}/api-vec", headers=_h(API_KEY)).status_code == 404
    import openai

    with pytest.raises(openai.BadRequestError):
        _steer(server, "api-vec")


def test_safetensors_upload(server, fingerprint):
    from vsteer.artifacts import SteeringVector

    vec = SteeringVector({6: np.full(576, 0.25, np.float32)}, fingerprint, method="file")
    r = httpx.post(server.base_url + "/v1/control/vectors?name=from-file",
                   content=vec.to_safetensors_bytes(),
                   headers={**_h(ADMIN_KEY), "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["layers"] == [6] and r.json()["method"] == "file"
    bad = httpx.post(server.base_url + "/v1/control/vectors?name=junk", content=b"\x00" * 32,
                     headers={**_h(ADMIN_KEY), "Content-Type": "application/octet-stream"})
    assert bad.status_code == 400


@pytest.mark.parametrize("payload,fragment", [
    (_json_vector("wrong-size", hidden=100), "expected (576,)"),
    (_json_vector("bad-layer", layers=(30,)), "out of range"),
    (_json_vector("../escape"), "invalid artifact name"),
    ({"name": "x", "directions": {}}, "directions"),
])
def test_bad_uploads_are_400(server, payload, fragment):
    r = httpx.post(server.base_url + "/v1/control/vectors", json=payload,
                   headers=_h(ADMIN_KEY))
    assert r.status_code == 400 and fragment in r.json()["error"]["message"]


def test_writes_need_the_admin_key(server):
    url = server.base_url + "/v1/control/vectors"
    assert httpx.post(url, json=_json_vector("nope"), headers=_h(API_KEY)).status_code == 403
    assert httpx.post(url, json=_json_vector("nope")).status_code == 401
    assert httpx.delete(f"{url}/joyful", headers=_h(API_KEY)).status_code == 403
    assert httpx.get(f"{url}/joyful", headers=_h(API_KEY)).status_code == 200


def test_vector_written_by_another_process_is_served(server, artifacts):
    code = (
        "import numpy as np, sys\n"
        "from vsteer.artifacts import *\n"
        "fp = ModelFingerprint('LlamaForCausalLM', 576, 30)\n"
        "v = SteeringVector({7: np.full(576, 2.0, np.float32)}, fp)\n"
        "ArtifactStore(sys.argv[1]).save_vector('from-elsewhere', v, overwrite=True)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(artifacts)], check=True)
    assert _steer(server, "from-elsewhere") != _steer(server, "from-elsewhere", 0.0)
