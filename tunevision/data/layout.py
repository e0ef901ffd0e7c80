"""A dataset folder's layout, read by its names the same way for every task: which subfolders are splits
(`Training/`, `valid/`, `test/` ...), which entries tools left behind rather than data (macOS' `__MACOSX/` and
`._name` files, `.ipynb_checkpoints/`, `Thumbs.db`, tunevision's own runs), and the single folder an archive wraps
its data in (`flowers.zip` unpacks to `flowers/flowers/...`); for one flat folder of images, the classes their
names give (`cat.0.jpg`, `Abyssinian_12.jpg`: fastai's `from_name_re`); and the split that list files name
(`trainval.txt` and `test.txt` beside Oxford-IIIT Pet's images, VOC's `ImageSets/Main/`)."""
from __future__ import annotations

import os
import re
from pathlib import Path

# every name a split folder or a CSV split cell goes by, to the role it plays
SPLIT_NAMES = {"train": "train", "training": "train", "trn": "train",
               "val": "val", "valid": "val", "validation": "val", "dev": "val", "eval": "val",
               "test": "test", "testing": "test"}
NAME_NUMBER = re.compile(r"[\W_]*\d+$")  # what numbers the images of a class: `_12`, `.0`, ` (3)`...
# what cameras, phones and tools number their files by: a folder of them holds no class in its names
CAMERA_NAMES = frozenset({"img", "dsc", "dscn", "dscf", "dcim", "pxl", "mvimg", "image", "photo", "picture",
                          "screenshot", "frame", "scan", "untitled", "gopr", "p", "pic", "snapshot"})
# what a folder of the photos themselves is called beside one of annotations (masks, trimaps) that are images too
IMAGE_FOLDER_NAMES = frozenset({"images", "imgs", "jpegimages", "photos", "pictures"})
# files tunevision writes together: a run folder, an audit folder, a bundle
OUTPUT_SIGNS = (("config.yaml", "train.log"), ("audit.csv", "audit.html"), ("model.json", "model.safetensors"))
LEFTOVERS = frozenset({"__macosx", "thumbs.db", "desktop.ini", "@eadir", "$recycle.bin"})


# words a split's name may carry besides the split's own (Kaggle's training_set/, test_set/, seg_train/, train2017/)
SPLIT_AFFIXES = frozenset({"set", "sets", "data", "dataset", "images", "image", "imgs", "img", "photos", "pictures",
                           "files", "split", "folder", "dir", "seg", "all", "full", "final"})


def split_role(name: str) -> str:
    """'train', 'val', 'test' or '' for a folder or cell name, whatever its case: a split's name alone, or with
    numbers and words that name no class around it (`training_set`, `seg_test`, `val2017`; `test_tube` is a class)."""
    key = name.strip().lower()
    if key in SPLIT_NAMES:
        return SPLIT_NAMES[key]
    words = [w for w in re.split(r"[^a-z]+", key) if w]
    roles = {SPLIT_NAMES[w] for w in words if w in SPLIT_NAMES}
    rest = [w for w in words if w not in SPLIT_NAMES]
    return roles.pop() if len(roles) == 1 and len(rest) < len(words) and set(rest) <= SPLIT_AFFIXES else ""


def split_in_name(path: Path) -> str:
    """The split a file's name says among its other words (`instances_train2017.json`, `fashion-mnist_test.csv`),
    or '' where it names none or more than one."""
    roles = {split_role(word) for word in re.split(r"[^a-z]+", path.stem.lower())} - {""}
    return roles.pop() if len(roles) == 1 else ""


def is_leftover(name: str) -> bool:
    """Hidden files and folders and what operating systems and notebooks leave in a folder: never data (a macOS
    zip's `._photo.jpg` is metadata that only looks like an image)."""
    return name.startswith(".") or name.lower() in LEFTOVERS


def under_leftover(path: Path, root: Path) -> bool:
    """Whether `path` (below `root`) lies in, or is, a leftover entry."""
    return any(is_leftover(part) for part in path.relative_to(root).parts)


def _written_here(folder: str) -> bool:
    return any(all(os.path.isfile(os.path.join(folder, name)) for name in sign) for sign in OUTPUT_SIGNS)


def is_output(folder: Path) -> bool:
    """Whether tunevision wrote this folder (a run, an audit, a bundle) or folders of them (`--out`'s runs/, where
    the run that is starting has written nothing yet): never data. A second `tunevision train .` inside the data
    folder learnt a class "runs" from the first run's report pictures."""
    if _written_here(str(folder)):
        return True
    try:
        with os.scandir(folder) as found:
            subfolders = [e.path for e in found if e.is_dir()]
    except OSError:
        return False
    return any(map(_written_here, subfolders))


def entries(folder: Path) -> list[Path]:
    """The folder's entries in name order, leftovers and tunevision's own output left out (none where it is no
    folder)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as found:
        return sorted(Path(e.path) for e in found
                      if not is_leftover(e.name) and not (e.is_dir() and is_output(Path(e.path))))


def has_subfolders(folder: Path) -> bool:
    """Whether a folder holds folders (of classes, of splits), leftovers not counted."""
    return any(p.is_dir() for p in entries(folder))


def held_out_role(roles) -> str | None:
    """The role that validates among `roles`: val, else test (a set's own test split where it has no val)."""
    return next((role for role in ("val", "test") if role in roles), None)


def training_and_held_out(splits: dict[str, Path]) -> tuple[Path, Path] | None:
    """(training, validation) of a `split_dirs` (or any role -> thing) mapping, or None without both."""
    role = held_out_role(splits)
    return (splits["train"], splits[role]) if "train" in splits and role else None


def assigned_splits(roles: list[str]) -> list[str] | None:
    """Each item's split, 'train', 'val' or 'unused', from its role ('' for none), where the roles hold a training
    and a held-out one; else None (no split given: a seeded one is drawn)."""
    role = held_out_role(roles)
    if "train" not in roles or role is None:
        return None
    return [{"train": "train", role: "val"}.get(r, "unused") for r in roles]


def split_dirs(root: Path) -> dict[str, Path]:
    """{role: folder} for the split folders directly under `root` (the first by name where two share a role), each
    entered where it wraps its data in one more folder (Kaggle's training_set/training_set/<class>/)."""
    found: dict[str, Path] = {}
    for p in entries(root):
        role = split_role(p.name)
        if role and p.is_dir():
            found.setdefault(role, unwrap(p))
    return found


def unwrap(root: Path) -> Path:
    """The folder that holds the data: `root`, or the one folder it wraps (with folders of its own in it), as
    archives unpack. A folder of images alone is never entered: that is one class, or the data itself."""
    while root.is_dir():
        inside = entries(root)
        if not (len(inside) == 1 and inside[0].is_dir() and has_subfolders(inside[0])):
            return root
        root = inside[0]
    return root


def classes_from_names(files: list[str]) -> dict[str, list[str]]:
    """{class: files} from file names less their trailing number (`cat.0.jpg` -> cat), or {} unless that names
    two or more classes of two or more images that hold nine in ten of the files (camera names, IMG_0001.jpg and
    DSC_0001.jpg, give none, nor does a folder of unrelated names)."""
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(NAME_NUMBER.sub("", Path(f).stem.rstrip(") ")), []).append(f)
    kept = {c: fs for c, fs in sorted(groups.items()) if c and len(fs) >= 2 and c.lower() not in CAMERA_NAMES}
    return kept if len(kept) >= 2 and sum(map(len, kept.values())) >= 0.9 * len(files) else {}


def split_lists(folder: Path) -> dict[str, Path]:
    """{role: list file} for the split lists in a folder: `train.txt` (else `trainval.txt`, VOC's and Oxford-IIIT
    Pet's name for training and validation together), `val.txt`, `test.txt`, any case, else lists whose names hold
    the split among other words (`notrash_train.txt`; VOC's per-class `cat_train.txt` lists every image of its
    split too). Numbered alternatives are none (DTD's train1.txt ... train10.txt, each a third of its images: a
    seeded split trains on more)."""
    found: dict[str, Path] = {}
    lists = sorted(folder.glob("*.txt"), key=lambda p: p.name.lower()) if folder.is_dir() else []
    for p in lists:
        role = SPLIT_NAMES.get(p.stem.lower()) or ("train" if p.stem.lower() == "trainval" else "")
        if role:
            found.setdefault(role, p)  # name order: train.txt before trainval.txt
    # else a list whose name holds the split among other words (TrashNet's one-indexed-files-notrash_train.txt);
    # one that names too few of the images (a train_log.txt) is no split list for `listed_splits` either
    for p in lists:
        role = "" if NAME_NUMBER.search(p.stem) else split_in_name(p)
        if role:
            found.setdefault(role, p)
    return found


def listed_names(path: Path) -> set[str]:
    """The image names a list file gives: the first word of each line (`Abyssinian_100 1 1 1`, Food-101's
    `apple_pie/1005649`), comments (`#`) left out; each with and without its extension, since lists give either."""
    words = [line.split()[0].replace("\\", "/") for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {w for word in words for w in (word, str(Path(word).with_suffix("")) if Path(word).suffix else word)}


def _list_keys(file: str) -> tuple[str, ...]:
    """What a list may call a file: its class folder and name (`apple_pie/1005649`), or its name alone."""
    p = Path(file)
    return f"{p.parent.name}/{p.stem}", f"{p.parent.name}/{p.name}", p.stem, p.name


ID_LISTS = ("images.txt", "train_test_split.txt")  # CUB-200-2011's and NABirds': `id path`, `id is_training`


def _id_pairs(path: Path) -> dict[str, str]:
    return dict(line.split()[:2] for line in path.read_text(errors="replace").splitlines() if len(line.split()) > 1)


def id_listed_splits(folder: Path, files: list[str]) -> list[str] | None:
    """Each file's split ('train', 'val', 'unused') where `folder` numbers the images in one list and flags the
    training ones by number in another (CUB-200-2011), else None, as `listed_splits`."""
    paths, flags = (folder / name for name in ID_LISTS)
    if not (paths.is_file() and flags.is_file()):
        return None
    flag = _id_pairs(flags)
    by_name = {k: flag.get(i) for i, name in _id_pairs(paths).items() for k in _list_keys(name.replace("\\", "/"))}
    flags = [next((r for r in map(by_name.get, _list_keys(f)) if r in ("0", "1")), "") for f in files]
    return _named_splits(["train" if r == "1" else "test" if r == "0" else "" for r in flags])


def _named_splits(roles: list[str]) -> list[str] | None:
    """`assigned_splits` of the roles lists give the files, or None where they name fewer than half of them (a
    stray list names no split)."""
    return assigned_splits(roles) if sum(map(bool, roles)) >= len(roles) / 2 else None


def listed_splits(lists: dict[str, Path], files: list[str]) -> list[str] | None:
    """Each file's split ('train', 'val', 'unused') as the training and held-out lists name it, or None where they
    give no such pair or name fewer than half the files (a stray list names no split)."""
    pair = training_and_held_out(lists)
    if pair is None:
        return None
    train, held = map(listed_names, pair)
    return _named_splits(["train" if any(k in train for k in keys) else "val" if any(k in held for k in keys) else ""
                          for keys in map(_list_keys, files)])
