"""Fetch the real MovieLens-100K that the recbole==1.2.1 wheel ships on PyPI.

    python -m lipctr.data.fetch ml-100k [--root DIR] [--wheel recbole-1.2.1-py3-none-any.whl]

pip downloads the wheel (no dependencies, nothing installed) into a temporary folder; the three
atomic files are extracted, checked against known sha256 digests and written atomically into
<datasets root>/ml-100k/. Idempotent: verified files already in place are kept.
ML-1M, Yelp2018 and Amazon-book cannot be fetched: their loaders say which files to supply.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lipctr.data.config import DataConfig, datasets_root
from lipctr.data.errors import DataError
from lipctr.data.locate import not_found_message
from lipctr.data.registry import get_preset, preset_key
from lipctr.io import write_atomically

REQUIREMENT = "recbole==1.2.1"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
CHECKSUMS = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
PIP_TIMEOUT_S = 600


def fetch_ml100k(folder: Path | None = None, wheel: Path | None = None, log=print) -> Path:
    """Ensure the verified ML-100K atomic files are in `folder` (default <root>/ml-100k); -> folder.

    `wheel`: a recbole-1.2.1 wheel already at hand (skips the download).
    """
    folder = Path(folder) if folder is not None else datasets_root() / "ml-100k"
    if all(_verified(folder / name, digest) for name, digest in CHECKSUMS.items()):
        return folder
    with tempfile.TemporaryDirectory(prefix="lipctr-fetch-") as tmp:
        if wheel is None:
            log(f"downloading {REQUIREMENT} from PyPI (pip download, no install) ...")
            wheel = download_wheel(Path(tmp), folder)
        contents = extract_files(Path(wheel))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        write_atomically(folder / name, lambda handle, data=data: handle.write(data))
    log(f"ML-100K: wrote {', '.join(contents)} to {folder} (sha256 verified)")
    return folder


def download_wheel(destination: Path, folder: Path) -> Path:
    """`pip download recbole==1.2.1 --no-deps` into `destination`; -> the wheel's path."""
    command = [
        sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps", "--only-binary=:all:",
        "--dest", str(destination), "--disable-pip-version-check", "--timeout", "20", "--retries", "2",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DataError(f"could not run pip to download {REQUIREMENT}: {error}. {_manual(folder)}") from None
    wheels = sorted(destination.glob("recbole-1.2.1-*.whl"))
    if done.returncode != 0 or not wheels:
        said = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DataError(
            f"could not download {REQUIREMENT} from PyPI (pip exit {done.returncode}: {said}). "
            f"Is PyPI reachable (pip honours PIP_INDEX_URL and proxy settings)? {_manual(folder)}"
        )
    return wheels[0]


def extract_files(wheel: Path) -> dict[str, bytes]:
    """The three ML-100K files from the wheel, each checked against CHECKSUMS."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = [n for n in CHECKSUMS if MEMBER_DIR + n not in names]
            if missing:
                raise DataError(f"{wheel}: lacks {', '.join(MEMBER_DIR + n for n in missing)}")
            contents = {n: archive.read(MEMBER_DIR + n) for n in CHECKSUMS}
    except zipfile.BadZipFile as error:
        raise DataError(f"{wheel}: not a valid wheel (zip) file ({error})") from None
    for name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != CHECKSUMS[name]:
            raise DataError(
                f"{wheel}: {MEMBER_DIR}{name} has sha256 {digest}, expected {CHECKSUMS[name]}; "
                "the wheel is not the genuine recbole 1.2.1"
            )
    return contents


def _verified(path: Path, digest: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _manual(folder: Path) -> str:
    return (
        f"Alternatively pass a downloaded wheel (python -m lipctr.data.fetch ml-100k --wheel "
        f"recbole-1.2.1-py3-none-any.whl) or put {', '.join(CHECKSUMS)} into {folder}/."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lipctr.data.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="ml-100k (the only dataset that can be fetched)")
    parser.add_argument("--root", type=Path, help="datasets root (default $LIPCTR_DATA or <repo>/datasets)")
    parser.add_argument("--wheel", type=Path, help="use this recbole-1.2.1 wheel instead of downloading")
    args = parser.parse_args(argv)
    try:
        key = preset_key(args.dataset)
        if key != "ml100k":
            print(f"{args.dataset} cannot be fetched here. " + not_found_message(_config_for(key, args.root)),
                  file=sys.stderr)
            return 2
        folder = (args.root or datasets_root()) / "ml-100k"
        fetch_ml100k(folder, args.wheel)
        print(f"ML-100K ready in {folder}")
        return 0
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _config_for(key: str, root: Path | None) -> DataConfig:
    config = get_preset(key)
    return config if root is None else get_preset(key, path=str(root / config.name))


if __name__ == "__main__":
    sys.exit(main())
