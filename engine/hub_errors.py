"""What a failed model-hub request means for the user: removed or mistyped (404), gated (licence and
token), forbidden (403), no network, or a repository without the SDS components, each as a ``model``
error that names the cause and the known alternatives (engine/known_models.json). Used by
``engine download`` and by loading a hub id directly (guidance.py). Never substitutes another model.

huggingface_hub's exceptions arrive either directly (download) or wrapped by transformers/diffusers in
an OSError (loading), so the cause is found by walking ``__cause__``/``__context__``; the network layer
is httpx (vendored as ``httpx2`` by huggingface_hub 2.x), whose errors are not OSErrors, so it is
recognised by class name.
"""

from __future__ import annotations

import os

from . import models
from .errors import ModelError

NETWORK_CLASSES = {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError", "TransportError",
                   "ConnectionError", "ProxyError", "RemoteProtocolError"}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def classify(exc: BaseException) -> tuple[str | None, int | None]:
    """(cause, HTTP status): cause is gated | not_found | forbidden | missing_file | offline | no_network | None."""
    chain = [(e, {c.__name__ for c in type(e).__mro__}) for e in _chain(exc)]

    def first(test):
        return next((e for e, names in chain if test(e, names)), None)

    # Most specific first. LocalEntryNotFoundError (not in the cache) is an EntryNotFoundError too, and
    # wraps the network error when there was one: it only means "offline" when nothing else explains it.
    checks = (
        ("gated", lambda e, n: "GatedRepoError" in n),
        ("not_found", lambda e, n: bool(n & {"RepositoryNotFoundError", "RevisionNotFoundError"})),
        ("forbidden", lambda e, n: "HfHubHTTPError" in n and _status(e) == 403),
        ("missing_file", lambda e, n: "RemoteEntryNotFoundError" in n
         or ("EntryNotFoundError" in n and "LocalEntryNotFoundError" not in n)),
        ("no_network", lambda e, n: bool(n & NETWORK_CLASSES) or isinstance(e, (ConnectionError, TimeoutError))),
        ("offline", lambda e, n: bool(n & {"OfflineModeIsEnabled", "LocalEntryNotFoundError"})),
    )
    for cause, test in checks:
        e = first(test)
        if e is not None:
            return cause, _status(e)
    return None, None


def token_given() -> bool:
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:
        return False


def message(repo: str, cause: str, status: int | None, detail: str = "", what: str = "") -> str:
    """The sentence for one cause. ``what``: the missing component for missing_file (e.g. 'unet/')."""
    alts = models.alternatives_text(repo)
    code = f"HTTP {status}" if status else "no HTTP status"
    if cause == "gated":
        text = (f"{repo} is gated ({code}): open https://huggingface.co/{repo} logged in to your hub account, accept "
                "its licence, then give an access token of that account (add-on preferences > Hub token, or HF_TOKEN).")
        if token_given():
            text += (" A token was sent and refused: accept the licence with the account the token belongs to, or "
                     "use a token that may read gated repositories.")
        else:
            text += " No token was sent."
    elif cause == "not_found":
        text = f"{repo} was not found on the model hub ({code}): the id is mistyped, or the repository was removed"
        text += " or is private (then it needs an access token)." if not token_given() else "."
    elif cause == "forbidden":
        text = (f"the model hub refused access to {repo} ({code}): the access token lacks permission for it (a "
                "fine-grained token needs read access to this repository or to gated repositories).")
    elif cause == "missing_file":
        text = (f"{repo} has no {what or 'file the engine needs'} ({code}): it is not a diffusers text-to-image "
                "model with the components SDS needs (unet, text_encoder, tokenizer, scheduler).")
    elif cause == "offline":
        text = (f"offline mode is on (HF_HUB_OFFLINE=1 or --offline) and {repo} is not in the local cache: download "
                "it once with network access, or use a model already on disk.")
    else:  # no_network
        text = (f"could not reach the model hub for {repo} (no network, or the hub is down). Connect and retry, or "
                "use a model already on disk: a downloaded one, a local diffusers folder, or builtin:shapes.")
    if detail:
        text += f" Detail: {detail[:200]}."
    return f"{text} {alts[0].upper()}{alts[1:]}"


def model_error(repo: str, exc: BaseException, what: str = "") -> ModelError | None:
    """A ModelError for a hub failure, or None when ``exc`` is not one (the caller keeps its own handling)."""
    cause, status = classify(exc)
    if cause is None:
        return None
    detail = str(exc).splitlines()[0] if cause == "no_network" else ""
    return ModelError(message(repo, cause, status, detail, what))
