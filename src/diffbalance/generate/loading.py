"""One loader for every pretrained diffusers object (the CFG generator, Stable Diffusion): safetensors only, no
remote code, a local folder checked before loading, and a one-line error when a model is absent or offline.

    load_pretrained(DDPMPipeline, "runs/gen", "CFG generator")
    load_pretrained(AutoPipelineForText2Image, "stable-diffusion-v1-5/stable-diffusion-v1-5", "text-to-image model",
                    torch_dtype=torch.float16)

It is the plain `from_pretrained` of a Hugging Face id or a local folder, so a tiny test model and a real one take
exactly the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffbalance.infra.errors import DiffbalanceError


def dtype_kwarg() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (≥ 0.36); use whichever this version takes without warning."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (exists only with `dtype`)

        return "dtype"
    except ImportError:
        return "torch_dtype"


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "not reachable / not there" (diffusers wraps most in OSError; the rest vary by version)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub import errors as hub_errors

        errors += [hub_errors.HfHubHTTPError, hub_errors.HFValidationError]
    except (ImportError, AttributeError):
        pass
    for module, name in (("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def error_text(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def _not_loadable(what: str, source: str) -> DiffbalanceError:
    return DiffbalanceError(
        f"cannot load {what} {source}: not a local folder and not downloadable (offline?)",
        f"download it with `huggingface-cli download {source}` / pass a local folder or set HF_HOME",
    )


def _no_safetensors(what: str, source: str) -> DiffbalanceError:
    return DiffbalanceError(
        f"{what} {source} has no safetensors weights (diffbalance never loads pickled .bin/.ckpt files)",
        "convert it with diffusers' `save_pretrained(folder, safe_serialization=True)` or use a safetensors release",
    )


def check_local_folder(cls: type, source: str | Path, what: str) -> None:
    """A local folder must hold `cls`'s index file (model_index.json for a pipeline) and safetensors weights."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return
    if not (folder / cls.config_name).is_file():
        raise DiffbalanceError(f"{folder} is not a diffusers {what} folder (no {cls.config_name})",
                               "pass a folder saved with `save_pretrained`, or a Hugging Face id")
    if not any(folder.rglob("*.safetensors")):
        raise _no_safetensors(what, str(source))


def _resolved(source: str | Path) -> str:
    local = Path(source).expanduser()
    return str(local) if local.is_dir() else str(source)


def read_index(cls: type, source: str | Path, what: str) -> dict[str, Any]:
    """`cls`'s index file (model_index.json / config.json) of a folder or Hub id. A Hub id is looked up in the local
    Hugging Face cache first; the Hub is contacted only when it answers a 3-second probe, so an offline machine
    gets one line at once instead of minutes of retries."""
    check_local_folder(cls, source, what)
    model = _resolved(source)
    if not Path(model).is_dir():
        try:
            return dict(cls.load_config(model, local_files_only=True))
        except _hub_errors():
            if not hub_reachable():
                raise _not_loadable(what, str(source)) from None
    try:
        return dict(cls.load_config(model))
    except _hub_errors() as err:
        raise _not_loadable(what, str(source)) from err


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint ($HF_ENDPOINT or the default) accepts a TCP connection; False offline."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


def load_pretrained(cls: type, source: str | Path, what: str, **kwargs: Any):
    """`cls.from_pretrained(source, use_safetensors=True, **kwargs)` with the checks and errors above."""
    read_index(cls, source, what)
    model = _resolved(source)
    try:
        # use_safetensors=True: never unpickle weights; no trust_remote_code / custom_pipeline: never run hub code
        return cls.from_pretrained(model, use_safetensors=True, **kwargs)
    except _hub_errors() as err:
        if "safetensors" in str(err):
            raise _no_safetensors(what, str(source)) from err
        if Path(model).is_dir():
            raise DiffbalanceError(f"cannot load {what} folder {model}: {error_text(err)}",
                                   "re-save it with `save_pretrained`") from err
        raise _not_loadable(what, str(source)) from err
