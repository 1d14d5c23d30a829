"""The local base image of the CPU compose profile: built on this machine, never pulled.

There is no registry to pull from, and the container needs nothing of its own: the compose file
bind-mounts the host's /usr, libraries, Python install, venv and tiny model read-only. So the image is
a near-empty root filesystem (user and name-service files, a /tmp) imported with `docker import`.

    python -m pytest_vllm.backends.compose_image      # build when missing, print the tag
"""

from __future__ import annotations

import io
import sys
import tarfile
import time
from typing import Any

CPU_IMAGE = "pytest-vllm/cpu-base:local"
# Copied from the host: enough for getpwuid() (torch asks for the user name) and name lookups.
ETC_FILES = ("passwd", "group", "nsswitch.conf")


def rootfs_tarball() -> bytes:
    """The image's whole content: a few files of /etc and a world-writable /tmp."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)
        for name in ETC_FILES:
            try:
                tar.add(f"/etc/{name}", arcname=f"etc/{name}")
            except FileNotFoundError:
                continue  # a minimal host without it: the container does without as well
    return buffer.getvalue()


def ensure_image(client: Any = None, tag: str = CPU_IMAGE) -> str:
    """Import the image under `tag` unless the engine already has it; returns the tag."""
    import docker
    import docker.errors

    client = client or docker.from_env()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(rootfs_tarball(), repository=repository, tag=version,
                                      changes=["LABEL pytest-vllm.image=cpu-base"])
    client.images.get(tag)  # raises if the import silently produced nothing
    return tag


def main() -> int:
    print(ensure_image())
    return 0


if __name__ == "__main__":
    sys.exit(main())
