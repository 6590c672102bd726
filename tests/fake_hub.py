"""A tiny stand-in for the Hugging Face hub on 127.0.0.1 (for HF_ENDPOINT): serves one folder as a model
repository through the endpoints huggingface_hub calls for model_info / snapshot_download. Never the
network. Records every request (path and whether a token came with it) for the tests to inspect.

The hub's refusals, as the real one answers them: an unknown repo is 404 RepoNotFound; ``gated`` repos
answer 401 GatedRepo without a token and 403 GatedRepo with the wrong one (licence not accepted);
``refuse`` makes a repo answer a fixed status (404 removed, 401 private, 403 forbidden token)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated: dict[str, str] | None = None,
                 refuse: dict[str, int] | None = None):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.gated = gated or {}  # repo -> the token it requires
        self.refuse = refuse or {}  # repo -> HTTP status it always answers (404, 401, 403)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def _send(self, h, code: int, data: bytes, headers: dict, body: bool) -> None:
        h.send_response(code)
        for k, v in {"Content-Length": str(len(data)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _json(self, h, obj, body: bool, code: int = 200) -> None:
        self._send(h, code, json.dumps(obj).encode(), {"Content-Type": "application/json"}, body)

    def _serve(self, h, body: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        auth = h.headers.get("Authorization")
        self.requests.append((h.command, path, auth))
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[0:2])
        if repo in self.refuse:
            code = self.refuse[repo]
            headers = {401: {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Invalid username or password."},
                       403: {"X-Error-Message": "Your token does not have access to this repository"},
                       404: {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}}[code]
            return self._send(h, code, b'{"error": "refused"}', headers, body)
        if repo not in self.repos:
            return self._send(h, 404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)
        if repo in self.gated and auth != f"Bearer {self.gated[repo]}":
            return self._send(h, 401 if auth is None else 403, b'{"error": "gated"}',
                              {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this repo is restricted"}, body)
        files = self.files(repo)
        if api and (len(parts) == 4 or parts[4] == "revision"):
            siblings = [{"rfilename": k, "size": v.stat().st_size} for k, v in files.items()]
            return self._json(h, {"id": repo, "modelId": repo, "sha": SHA, "siblings": siblings, "private": False}, body)
        if api and len(parts) >= 5 and parts[4] == "tree":
            entries = [{"type": "file", "path": k, "size": v.stat().st_size,
                        "oid": hashlib.sha1(v.read_bytes()).hexdigest()} for k, v in files.items()]
            return self._json(h, entries, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            rel = "/".join(parts[4:])
            if rel not in files:
                return self._send(h, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
            data = files[rel].read_bytes()
            etag = hashlib.sha256(data).hexdigest()
            return self._send(h, 200, data, {"X-Repo-Commit": SHA, "ETag": f'"{etag}"',
                                             "Content-Type": "application/octet-stream"}, body)
        return self._send(h, 404, b"{}", {}, body)


def make_repo(model: str, dest: str) -> None:
    """A hub-like repository from a local diffusers folder: the plain weights plus an fp16 variant of
    each, and files SDS does not need (a pickle, a safety checker, a non-EMA variant, a README) that a
    download must skip. Runs where torch is (the main environment)."""
    import shutil

    from safetensors.torch import load_file, save_file

    src, dst = Path(model), Path(dest)
    shutil.copytree(src, dst)
    for weights in list(dst.rglob("*.safetensors")):
        half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}
        save_file(half, weights.with_name(weights.stem + ".fp16.safetensors"))
    (dst / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle: must never be fetched")
    (dst / "unet" / "diffusion_pytorch_model.non_ema.safetensors").write_bytes(b"x" * 1000)
    (dst / "safety_checker").mkdir()
    (dst / "safety_checker" / "model.safetensors").write_bytes(b"x" * 1000)
    (dst / "README.md").write_text("tiny test model")
