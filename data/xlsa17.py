"""The xlsa17 side of data/make_dataset.py: ResNet-101 features as the xlsa17 release made them
(torchvision's network and ImageNet weights, the preprocessing, the batched DataLoader extraction)
and its file layout: the 1-based split rows (drawn as make_dataset.py describes), res101.mat and
att_splits.mat, written into a --out folder that appears whole or not at all.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from util import DataError, share_count

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
FEATURE_DIM = 2048

# ----------------------------------------------------------------------------- torchvision

# Kept alive for the whole process: dropping the Library object would undefine the schemas.
_TORCHVISION_STUB_OPS = None


def import_torchvision():
    """`import torchvision`, working around a torchvision whose compiled ops cannot load.

    PyPI's torchvision 0.28.0 can be a CUDA build whose `_C` extension does not load beside
    a CPU torch. Its import then fails in `_meta_registrations.py`, which registers fake
    kernels for `torchvision::nms` and `torchvision::qnms` whether or not the ops exist
    ("operator torchvision::nms does not exist"). Only for that failure, and only where it is
    that case (a CPU torch, a CUDA torchvision built for this very torch release), the two
    schemas are defined here (without kernels) and the import is retried. Nothing on this path
    uses torchvision's compiled ops: ResNet-101 and the PIL transforms are pure Python/torch.
    The same message from a torchvision of another release is a real mismatch: a DataError.
    """
    global _TORCHVISION_STUB_OPS
    try:
        import torchvision
        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
        mismatch = torchvision_mismatch()
        if mismatch:
            raise DataError(f"{mismatch} ({' '.join(str(exc).split())}): {mismatch_fix()}") from None
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that the retry starts clean
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_STUB_OPS = lib
    print("note: torchvision's compiled ops do not load beside this torch build; defined the nms/qnms "
          "schemas without kernels so that torchvision imports (ResNet-101 does not use them)", file=sys.stderr)
    import torchvision
    return torchvision


def installed_torchvision() -> tuple[str, str | None]:
    """(torchvision's version with its build tag, e.g. '0.28.0+cu130', read without importing it;
    the torch version its package metadata pins, or None)."""
    import importlib.metadata
    import importlib.util
    import re
    version, pinned = "unknown", None
    spec = importlib.util.find_spec("torchvision")
    if spec and spec.submodule_search_locations:
        text = ""
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "version.py"
            if candidate.is_file():
                text = candidate.read_text()
                break
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        version = found[1] if found else version
    try:
        for requirement in importlib.metadata.requires("torchvision") or []:
            found = re.fullmatch(r"torch\s*\(?\s*==\s*([^\s);]+)\s*\)?", requirement.strip())
            if found:
                pinned = found[1]
    except importlib.metadata.PackageNotFoundError:
        pass
    return version, pinned


def torchvision_mismatch() -> str:
    """'' when a failed torchvision import is the known case (a CPU torch beside the CUDA build of the
    torchvision made for the same torch release), otherwise what is wrong."""
    version, pinned = installed_torchvision()
    torch_release = torch.__version__.split("+")[0]
    if torch.version.cuda is not None:
        return f"torchvision {version} does not import beside torch {torch.__version__} (a CUDA build)"
    if "+cu" not in version and "+" in version:
        return f"torchvision {version} (not a CUDA build) does not import beside torch {torch.__version__}"
    if pinned != torch_release:
        built = f"it was built for torch {pinned}" if pinned else "its package does not say which torch it needs"
        return f"torchvision {version} does not import beside torch {torch.__version__}; {built}"
    return ""


def mismatch_fix() -> str:
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    hint = f"torchvision==0.{minor + 15}.*" if major == 2 else "the torchvision release made for it"
    return f"install the torchvision of this torch's release ({hint}), from the same index as torch"


# ----------------------------------------------------------------------------- features

def build_extractor(weights, torchvision=None, init_seed: int | None = None) -> torch.nn.Module:
    """ResNet-101 up to its global average pool (fc replaced by identity), in eval mode.

    `weights`: None (random init), a torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2)
    or a state-dict file. The random init draws from torch's RNG, or, with `init_seed`, from
    a fork of it seeded with `init_seed` (same network every time; the caller's RNG untouched).
    """
    tv = torchvision or import_torchvision()
    with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        model = tv.models.resnet101(weights=None)
    if weights is not None:
        name = str(weights).upper()
        if name in tv.models.ResNet101_Weights.__members__:
            model.load_state_dict(download_weights(tv.models.ResNet101_Weights[name]))
        else:
            load_weights_file(model, Path(weights).expanduser())
    model.fc = torch.nn.Identity()
    return model.eval()


def download_weights(weights) -> dict:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # no network, proxy, bad hash, full disk...: all end the same way
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(f"could not download the ResNet-101 ImageNet weights {weights.url} ({reason}); "
                        f"without internet, fetch that file elsewhere and pass --weights=FILE") from None


def load_weights_file(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: --weights file not found (or give IMAGENET1K_V1, IMAGENET1K_V2 or none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: --weights is not a readable state dict ({type(exc).__name__}); "
                        f"save one with torch.save(model.state_dict(), FILE)") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: --weights holds a {type(state).__name__}, not a state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise DataError(f"{path}: --weights does not fit ResNet-101 ({str(exc).split(chr(10))[1].strip()})") from None
    missing = [k for k in missing if not k.startswith("fc.")]  # the classifier is dropped anyway
    if missing or unexpected:
        what = f"missing {shorten(missing, 3)}" if missing else f"unexpected {shorten(unexpected, 3)}"
        raise DataError(f"{path}: --weights is not a ResNet-101 state dict ({what})")


def preprocessing(torchvision=None):
    """xlsa17's input: the whole image resized to 224 x 224, ImageNet normalisation."""
    transforms = (torchvision or import_torchvision()).transforms
    return transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as a browser or viewer shows them


def to_rgb(img: Image.Image) -> Image.Image:
    """The 8-bit RGB image the network sees: the EXIF orientation applied, 16-bit greyscale scaled
    to 8 bits (convert("RGB") clips it: every value above 255 becomes white), transparency
    composited on white (convert("RGB") drops alpha and shows the hidden colours). 32-bit float
    images, and 32-bit integer ones beyond 16-bit values, have no defined white level: refused."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":  # I: how older Pillows open 16-bit PNGs
        values = np.asarray(img)
        if img.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"mode I (32-bit integer) with values {values.min()}..{values.max()}, beyond 16 bits, "
                             f"has no defined white level; save it as an 8- or 16-bit image")
        img = Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L")  # 65535 -> 255, exact on v * 257
    elif img.mode == "F":
        raise ValueError("mode F (32-bit floating point) has no defined white level; save it as an 8- or 16-bit "
                         "image")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, BACKGROUND + (255,)), img.convert("RGBA"))
    return img.convert("RGB")


def reason_of(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split()) or "error"


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, preprocessed images; a file that does not decode yields zeros and its reason."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.files[i]) as img:
                return self.transform(to_rgb(img)), ""
        except Exception as exc:  # Pillow raises many types for broken files; the caller names the file
            return torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE), reason_of(exc)


def decode_problem(path: Path) -> str:
    """'' when the file decodes to the network's RGB input, otherwise why not."""
    try:
        with Image.open(path) as img:
            to_rgb(img)
        return ""
    except Exception as exc:
        return reason_of(exc)


def check_images(files: list[Path], workers: int = 0, progress: bool | None = None) -> dict[int, str]:
    """{index: reason} of every file that does not decode, all found before the (long) extraction.
    Decoding is a few per cent of a ResNet-101 forward on the CPU; Pillow's decoders release the
    GIL, so `workers` threads share it."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(files), unit="img", desc="checking images",
                 disable=None if progress is None else not progress) as bar:
        problems = {}
        for i, reason in enumerate(pool.map(decode_problem, files, chunksize=64)):
            if reason:
                problems[i] = reason
            bar.update(1)
    return problems


def extract_features(model: torch.nn.Module, files: list[Path], device: torch.device, transform,
                     batch_size: int = 32, workers: int = 0, skip_bad_images: bool = False,
                     progress: bool | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """(N, 2048) float32 features and {index: reason} of the files that did not decode.

    Without `skip_bad_images` the first undecodable file stops it with a DataError.
    """
    loader = torch.utils.data.DataLoader(ImageFiles(files, transform), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    features = np.empty((len(files), FEATURE_DIM), dtype=np.float32)
    bad: dict[int, str] = {}
    model = model.to(device)
    tf32 = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # float32 convolutions on the GPU, as the CPU computes
    try:
        with torch.inference_mode(), tqdm(total=len(files), unit="img", desc="ResNet-101",
                                          disable=None if progress is None else not progress) as bar:
            start = 0
            for images, reasons in loader:
                for j, reason in enumerate(reasons):
                    if reason:
                        if not skip_bad_images:
                            raise DataError(f"{files[start + j]}: cannot decode this image ({reason}); fix or "
                                            f"remove it, or pass --skip_bad_images to leave it out")
                        bad[start + j] = reason
                out = model(images.to(device, non_blocking=True))
                features[start:start + len(reasons)] = out.float().cpu().numpy()
                start += len(reasons)
                bar.update(len(reasons))
    finally:
        torch.backends.cudnn.conv.fp32_precision = tf32
    return features, bad


def shorten(items: list[str], limit: int = 5) -> str:
    """Up to `limit` quoted items, then how many more (make_dataset.py's messages use it too)."""
    head = ", ".join(repr(i) for i in items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ----------------------------------------------------------------------------- splits and files

def make_splits(labels: np.ndarray, seen: np.ndarray, val_classes: np.ndarray, test_seen_share: float,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """1-based image rows of each split (labels are 1-based class ids; unseen = not in `seen`)."""
    test_seen = []
    for c in seen:
        rows = np.flatnonzero(labels == c)
        k = share_count(test_seen_share, rows.size)
        test_seen.append(rng.choice(rows, k, replace=False))
    test_seen = np.sort(np.concatenate(test_seen))
    is_seen = np.isin(labels, seen)
    trainval = np.setdiff1d(np.flatnonzero(is_seen), test_seen)
    in_val = np.isin(labels[trainval], val_classes)
    rows = {"trainval_loc": trainval, "test_seen_loc": test_seen, "test_unseen_loc": np.flatnonzero(~is_seen),
            "train_loc": trainval[~in_val], "val_loc": trainval[in_val]}
    return {key: r + 1 for key, r in rows.items()}


def index_type(n_images: int) -> type:
    """xlsa17 stores locs as uint16, which holds row numbers up to 65,535 only."""
    return np.uint16 if n_images <= np.iinfo(np.uint16).max else np.uint32


def cell(strings: list[str]) -> np.ndarray:
    """An (n, 1) object array: scipy writes it as a MATLAB cell of strings."""
    out = np.empty((len(strings), 1), dtype=object)
    out[:, 0] = strings
    return out


# A MAT v5 variable (what scipy.io.savemat writes, and scipy.io.loadmat and MATLAB read) has a 32-bit
# byte count: scipy's writer fails on 4 GiB of features (524,288 images of 2048 float32), and only
# after writing them all. make_dataset checks this before extracting.
MAT_V5_LIMIT = 2 ** 32
FEATURES_HEADER = 56  # the features variable's flags, dims and name elements and its data tag


def mat_v5_most_images() -> int:
    """The most images whose features one MAT v5 variable holds (524,287)."""
    return (MAT_V5_LIMIT - FEATURES_HEADER - 1) // (FEATURE_DIM * 4)


def mat_v5_fits(n_images: int) -> bool:
    return n_images <= mat_v5_most_images()


def append_features(f, features: np.ndarray) -> None:
    """Append `features` (N, 2048) float32, C order, to an open MAT v5 file as the variable
    `features` (2048 x N single): the bytes scipy.io.savemat writes for features.T, written from
    the array's own memory (savemat makes a transposed copy and then a bytes copy of it)."""
    assert features.dtype == np.float32 and features.flags.c_contiguous and features.shape[1] == FEATURE_DIM
    data = features.size * 4  # a multiple of 8: no padding
    element = FEATURES_HEADER + data
    if element >= MAT_V5_LIMIT:
        raise DataError(f"{features.shape[0]} images: res101.mat cannot hold their features (MAT v5 limit)")
    u4, i4 = np.dtype("<u4"), np.dtype("<i4")
    f.write(np.array([14, element], u4).tobytes())               # miMATRIX, its byte count
    f.write(np.array([6, 8, 7, 0], u4).tobytes())                # miUINT32 flags: mxSINGLE_CLASS, nzmax 0
    f.write(np.array([5, 8], u4).tobytes() + np.array([FEATURE_DIM, features.shape[0]], i4).tobytes())  # dims
    f.write(np.array([1, 8], u4).tobytes() + b"features")        # miINT8 name
    f.write(np.array([7, data], u4).tobytes())                   # miSINGLE data, column-major = features' rows
    f.write(memoryview(features).cast("B"))


def write_xlsa17(folder: Path, features: np.ndarray, labels: np.ndarray, image_files: list[str],
                 raw: np.ndarray, classes: list[str], locs: dict[str, np.ndarray]) -> None:
    """res101.mat + att_splits.mat into `folder` (exists, empty). `features` (N, 2048) float32 is
    written without a copy (see append_features)."""
    with open(folder / "res101.mat", "wb") as f:
        sio.savemat(f, {"labels": labels.reshape(-1, 1).astype(np.float64), "image_files": cell(image_files)},
                    do_compression=False)
        append_features(f, np.ascontiguousarray(features, dtype=np.float32))  # no copy when it is already so
    att = raw.T / np.linalg.norm(raw.T, axis=0, keepdims=True)
    kind = index_type(labels.size)
    sio.savemat(folder / "att_splits.mat", {
        "att": att, "original_att": raw.T.copy(), "allclasses_names": cell(classes),
        **{key: r.reshape(-1, 1).astype(kind) for key, r in locs.items()}})


def check_output(out: Path) -> None:
    if out.exists():
        raise DataError(f"{out}: --out exists; not overwriting it (remove it or pick another name)")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: the parent folder of --out does not exist")


def write_atomically(out: Path, write) -> None:
    """`write(folder)` into a temp folder beside `out`, renamed to `out` at the end; on any error, nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700, as mkdir would have made it
        check_output(out)  # appeared while the features were computed: keep it, drop ours
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def current_umask() -> int:
    """The process's umask (read from /proc where there is one: setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
