"""Weights behind a Hugging Face gate: check access first, and turn a refusal into one message with the steps.

canopylabs/orpheus-3b-0.1-ft is gated: the hub serves its files only to a logged-in user who accepted
its terms. Without that, the first ``from_pretrained`` fails deep inside a download with
``GatedRepoError``. Here ``check_access`` asks the hub first (``HfApi.auth_check``) and
``gated_advice`` catches the error during loading; both end in one ``GatedModelError`` that says what
to do. The token is what ``huggingface_hub.get_token()`` finds: on Colab the secret ``HF_TOKEN``,
then the ``HF_TOKEN`` variable, then the file ``huggingface_hub.login()`` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from .errors import GatedModelError


def is_local(repo) -> bool:
    """A folder on this machine (nothing to download)."""
    return Path(str(repo)).expanduser().exists()


def token() -> str | None:
    """The Hugging Face token this process would send, or None."""
    from huggingface_hub import get_token

    return get_token()


def _is_gated(err: BaseException | None) -> bool:
    from huggingface_hub.errors import GatedRepoError

    seen = set()
    while err is not None and id(err) not in seen:  # transformers and vLLM wrap the hub's error
        seen.add(id(err))
        text = str(err).lower()
        if isinstance(err, GatedRepoError) or "gated repo" in text or "is restricted" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def check_access(repo_ids: Iterable[str], alternative: str | None = None) -> None:
    """Raise ``GatedModelError`` (with the steps) if a hub repository in ``repo_ids`` is gated for this
    token, or ValueError if it does not exist. Local folders are skipped; when the hub cannot be reached
    nothing is raised here (the download will say why)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    for repo in dict.fromkeys(str(r) for r in repo_ids):
        if is_local(repo):
            continue
        try:
            HfApi().auth_check(repo)
        except GatedRepoError:
            raise GatedModelError(repo, token() is not None, alternative) from None
        except RepositoryNotFoundError:
            raise ValueError(f"{repo} is not on the Hugging Face Hub (or is private to another account): "
                             "check the name, or pass a local folder") from None
        except Exception:  # offline, proxy, hub down: let the download report it
            continue


@contextmanager
def gated_advice(repo_id: str, alternative: str | None = None):
    """Turn a gated-repository refusal raised inside the block, however wrapped, into ``GatedModelError``."""
    try:
        yield
    except GatedModelError:
        raise
    except Exception as err:
        if not _is_gated(err):
            raise
        raise GatedModelError(repo_id, token() is not None, alternative) from None
