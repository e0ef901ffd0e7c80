"""The data audit: each check on synthetic data where the answer is known, the files it writes, --fixes, embed."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_class_folders, tiny_args
from PIL import Image

from tunevision.auditing.duplicates import (
    duplicate_pairs,
    exact_pairs,
    pixel_hashes,
)
from tunevision.auditing.labels import find_label_issues, normalised, out_of_fold_probs
from tunevision.auditing.neighbours import nearest
from tunevision.auditing.outliers import outlier_scores, outliers
from tunevision.auditing.quality import odd_images
from tunevision.core.errors import TunevisionError
from tunevision.data.fixes import apply_fixes
from tunevision.data.sources import Dataset, Sample


def clusters(n: int = 60, classes: int = 3, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)) * 4
    y = np.arange(n * classes) % classes
    return centres[y] + rng.normal(0, 1, (len(y), dim)), y


def test_flipped_labels_are_flagged_with_the_true_class_suggested():
    x, y = clusters()
    noisy = y.copy()
    flipped = [3, 40, 77, 120, 151]
    for i in flipped:
        noisy[i] = (y[i] + 1) % 3
    probs = out_of_fold_probs(x, noisy)
    issues = find_label_issues(noisy, probs)
    assert {i.index for i in issues} == set(flipped)
    assert all(i.suggested == y[i.index] for i in issues)
    assert find_label_issues(y, out_of_fold_probs(x, y)) == []


def test_label_issues_are_as_many_as_cleanlab_counts_least_label_quality_first():
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores
    x, y = clusters(n=40, classes=4, seed=2)
    x += np.random.default_rng(3).normal(0, 3, x.shape)  # overlapping classes: doubts beyond the flips
    noisy = y.copy()
    noisy[::9] = (y[::9] + 1) % 4
    probs = out_of_fold_probs(x, noisy)
    issues = find_label_issues(noisy, probs)
    assert len(issues) == cleanlab_issues(noisy, probs, filter_by="both").sum() > 5
    quality = get_label_quality_scores(noisy, probs)
    flagged = [i.index for i in issues]
    assert [i.score for i in issues] == sorted(quality[flagged].tolist())
    assert quality[flagged].max() <= np.delete(quality, flagged).min()  # none of the rest is more doubtful


def test_k_fold_heads_started_from_the_probe_reach_the_same_probabilities():
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from tunevision.auditing.labels import logistic_head
    x, y = clusters(n=30, classes=3)
    noisy = y.copy()
    noisy[[3, 40]] = (y[[3, 40]] + 1) % 3
    cold = out_of_fold_probs(x, noisy)
    own = cross_val_predict(logistic_head(), normalised(x), noisy, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            method="predict_proba")
    np.testing.assert_allclose(cold, own, atol=1e-6)  # without a start: sklearn's own K-fold
    warm = out_of_fold_probs(x, noisy, start=logistic_head().fit(normalised(x)[:60], noisy[:60]))
    np.testing.assert_allclose(warm, cold, atol=0.02)
    assert {i.index for i in find_label_issues(noisy, warm)} == {3, 40}
    # augmented views: each head trains on every view's rows and averages its views' probabilities; a view that
    # repeats the eval view doubles each loss term, as C=2 does on the eval view alone
    twice = cross_val_predict(logistic_head(C=2), normalised(x), noisy,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    np.testing.assert_allclose(out_of_fold_probs(x, noisy, views=[x.copy()]), twice, atol=1e-5)
    thin = np.append(noisy, 3)  # a class with one image: no fold has it twice, every head starts cold
    probs = out_of_fold_probs(np.vstack([x, x[:1]]), thin, start=logistic_head().fit(normalised(x), noisy))
    assert probs.shape == (len(thin), 4) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_label_issues_fork_no_process(monkeypatch):
    """A fork of a process with torch threads can hang for good (it did, inside a training run): no Pool."""
    import multiprocessing

    def no_pool(*a, **k):
        raise AssertionError("find_label_issues forked a multiprocessing Pool")
    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    x, y = clusters()
    noisy = y.copy()
    noisy[[3, 40]] = (y[[3, 40]] + 1) % 3
    assert {i.index for i in find_label_issues(noisy, out_of_fold_probs(x, noisy))} == {3, 40}


def test_audit_runs_blas_on_one_thread_and_gives_the_threads_back():
    """Beside torch's OpenMP workers, two OpenBLAS threads made the K-fold heads 4x slower: one thread, then back.
    In a fresh process, where SciPy's own OpenBLAS (sklearn's solver) is not loaded before the audit starts."""
    script = """
import numpy as np
from threadpoolctl import threadpool_info
import tunevision.auditing.findings as findings

def blas_threads():
    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
seen = []
real = findings.out_of_fold_probs
def spy(*a, **k):
    seen.append(blas_threads())
    return real(*a, **k)
findings.out_of_fold_probs = spy
before = blas_threads()
rng = np.random.default_rng(0)
y = np.arange(60) % 3
x = rng.normal(0, 1, (3, 16))[y] * 4 + rng.normal(0, 1, (60, 16))
images = rng.integers(0, 255, (60, 32, 32, 3), dtype=np.uint8)
a = findings.Audited(paths=[f"{i}.png" for i in range(60)], splits=["train"] * 60, labels=y, classes=list("abc"),
                     features=x, image_sets=(images,), sizes=[(32, 32)] * 60)
findings.run_audit(a)
after = blas_threads()
assert len(seen) == 1 and len(seen[0]) > len(before), (before, seen)  # SciPy's BLAS loaded by then
assert all(n == 1 for n in seen[0].values()), seen
assert all(after[k] == n for k, n in before.items()), (before, after)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def smooth_images(n: int, side: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((side, side), Image.BICUBIC)) for s in small])


def test_duplicates_exact_and_near_need_close_features_and_matching_pixels():
    images = smooth_images(6)
    images[3] = images[1]
    crop = Image.fromarray(images[0]).crop((4, 4, 60, 60)).resize((64, 64), Image.BICUBIC)
    images[4] = np.asarray(crop)  # image 0 cropped by 6 % a side
    assert [(p.first, p.second, p.kind) for p in exact_pairs(pixel_hashes(images))] == [(1, 3, "exact")]
    rng = np.random.default_rng(0)
    f = rng.normal(0, 1, (6, 16))
    f[4] = f[0] + rng.normal(0, 0.2, 16)   # close features, matching pixels: a near duplicate
    f[5] = f[2] + rng.normal(0, 0.2, 16)   # close features, different pixels: two photos of one thing
    f[3] = f[1]
    pairs = duplicate_pairs(images, f)
    assert [(p.first, p.second, p.kind) for p in pairs] == [(1, 3, "exact"), (0, 4, "near")]
    assert pairs[1].similarity >= 0.99


def test_small_images_pair_only_when_they_also_match_at_finer_detail():
    """Digits at 24 px, read at 96 px as small images are: two bars with other strokes match on 16 px thumbnails
    like copies do; at 32 px only the copy still does."""
    def digit(seed: int) -> np.ndarray:
        d = np.zeros((24, 24), np.uint8)
        d[4:20, 10:13] = np.random.default_rng(seed).integers(150, 255, (16, 3))
        return np.repeat(np.asarray(Image.fromarray(d).resize((96, 96), Image.BILINEAR))[..., None], 3, 2)
    copy = np.clip(digit(0).astype(int) + np.random.default_rng(9).integers(-2, 3, (96, 96, 3)), 0, 255)
    images = np.stack([digit(0), digit(1), copy.astype(np.uint8)])
    same = np.ones((3, 8), np.float32)  # every pair a candidate
    unknown = {(p.first, p.second) for p in duplicate_pairs(images, same)}
    assert unknown == {(0, 1), (0, 2), (1, 2)}  # sizes unknown: the thumbnails alone
    assert {(p.first, p.second) for p in duplicate_pairs(images, same, sides=np.full(3, 24))} == {(0, 2)}
    assert {(p.first, p.second) for p in duplicate_pairs(images, same, sides=np.full(3, 500))} == unknown


def test_outliers_flag_the_far_image_and_not_a_fixed_share():
    x, _ = clusters(n=40)
    assert len(outliers(outlier_scores(x))) <= 2
    far = np.vstack([x, np.full((1, x.shape[1]), 50.0) * np.sign(np.random.default_rng(1).normal(size=x.shape[1]))])
    assert outliers(outlier_scores(far))[0] == len(x)


def test_nearest_neighbours_leave_each_image_out_most_similar_first():
    x, _ = clusters(n=10)
    near = nearest(x, 4)
    cos = normalised(x) @ normalised(x).T
    np.fill_diagonal(cos, -np.inf)
    assert near.index.shape == (len(x), 4) and not (near.index == np.arange(len(x))[:, None]).any()
    np.testing.assert_allclose(near.similarity, -np.sort(-cos, axis=1)[:, :4], atol=1e-5)
    assert nearest(x[:1]).index.shape == (1, 0)  # one image has no neighbour


def test_outlier_scores_on_the_audits_neighbours_are_cleanlabs_own():
    from cleanlab.outlier import OutOfDistribution
    x, _ = clusters(n=30)
    x[7] = x[8]  # an exact duplicate: cleanlab corrects its own search for them
    own = OutOfDistribution({"k": 10}).fit_score(features=normalised(x))
    np.testing.assert_allclose(outlier_scores(x, nearest(x)), own, atol=1e-5)


def test_odd_images_by_rule():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    dark = (photo // 8).astype(np.uint8)
    blank = np.full((64, 64, 3), 128, np.uint8)
    images = np.stack([photo, photo, photo, dark, blank, photo] + [photo] * 14)
    found = {(o.index, o.issue) for o in odd_images(images, [(640, 480)] * 5 + [(2000, 100)] + [(640, 480)] * 14)}
    assert found == {(3, "dark"), (4, "low information"), (5, "odd size")}
    # digits on black are all low in entropy: none is odd among its own kind, a blank one still is
    digits = np.zeros((20, 64, 64, 3), np.uint8)
    for i, d in enumerate(digits):
        d[8:56, 20 + i % 8:30 + i % 8] = rng.integers(150, 255, (48, 10, 1), dtype=np.uint8)
    digits[7] = 0
    assert {(o.index, o.issue) for o in odd_images(digits, [(64, 64)] * 20)} == {(7, "low information")}


def test_fixes_drop_relabel_and_one_line_errors(tmp_path: Path):
    ds = Dataset(["a", "b"], [Sample(str(tmp_path / "x.jpg"), 0), Sample(str(tmp_path / "y.jpg"), 0)],
                 [Sample(str(tmp_path / "z.jpg"), 1)], "test")
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("path,issue,action\nx.jpg,label,relabel:b\nz.jpg,dark,drop\ny.jpg,label,keep\n")
    record = apply_fixes(ds, fixes, str(tmp_path))
    assert [(Path(s.path).name, s.label) for s in ds.train] == [("x.jpg", 1), ("y.jpg", 0)] and ds.val == []
    assert (record["dropped"], record["relabelled"]) == (1, 1)
    for body, message in [("path,action\nnope.jpg,drop\n", "line 2: nope.jpg is not an image"),
                          ("path,action\nx.jpg,relabel:c\n", "line 2: relabel to 'c'"),
                          ("path,action\nx.jpg,delete\n", "line 2: action 'delete'"),
                          ("file,what\nx.jpg,drop\n", "needs the columns path and action")]:
        fixes.write_text(body)
        with pytest.raises(TunevisionError, match=message):
            apply_fixes(Dataset(["a", "b"], [Sample(str(tmp_path / "x.jpg"), 0)], [], "test"), fixes,
                        str(tmp_path))


def audit_folder(tmp_path: Path) -> Path:
    """Colour classes with a leaked copy (train -> val), a black image and a banner-shaped one."""
    root = make_class_folders(tmp_path / "data", n=12, classes=("blue", "red", "green"), split=True)
    shutil.copy(root / "train" / "red" / "red_000.jpg", root / "val" / "red" / "copy_of_red_000.jpg")
    Image.new("RGB", (40, 40), (3, 3, 3)).save(root / "train" / "blue" / "black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 400, 3), dtype=np.uint8)).save(
        root / "train" / "green" / "banner.png")
    return root


def test_audit_command_writes_csv_html_json_and_fixes_train(tmp_path: Path, cache: str):
    from tunevision.cli.main import main
    data = audit_folder(tmp_path)
    r = CliRunner().invoke(main, ["audit", str(data), *tiny_args(cache, tmp_path / "runs"), "--name", "aud"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "runs" / "aud"
    rows = list(csv.DictReader(open(folder / "audit.csv")))
    by_issue = {(row["issue"], Path(row["path"]).name) for row in rows}
    assert ("leakage", "copy_of_red_000.jpg") in by_issue
    assert ("low information", "black.png") in by_issue and ("odd size", "banner.png") in by_issue
    leak = next(row for row in rows if row["issue"] == "leakage")
    assert Path(leak["other"]).name == "red_000.jpg" and leak["action"] == "keep"
    summary = json.loads((folder / "audit.json").read_text())
    assert summary["leaked_val"] == [str(data / "val" / "red" / "copy_of_red_000.jpg")]
    assert "probe_val_acc_without_leaked" in summary
    page = (folder / "audit.html").read_text()
    assert "leakage (1)" in page and page.count("data:image/jpeg;base64") >= 4

    for row in rows:  # the user's decisions: drop the black card and the leaked copy
        row["action"] = "drop" if Path(row["path"]).name in ("black.png", "copy_of_red_000.jpg") else "keep"
    with open(folder / "audit.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = CliRunner().invoke(main, ["train", str(data), *tiny_args(cache, tmp_path / "runs"), "--name", "fixed",
                                  "--mode", "freeze", "--epochs", "2", "--fixes", str(folder / "audit.csv")])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "fixed"
    split = (run / "split.csv").read_text()
    assert "black.png" not in split and "copy_of_red_000" not in split and "banner.png" in split
    assert json.loads((run / "summary.json").read_text())["fixes"]["dropped"] == 2
    assert (run / "fixes.csv").read_text() == (folder / "audit.csv").read_text()
    report = (run / "report.html").read_text()
    assert "Data audit" in report and "without the 0 that duplicate" in report  # its own audit: no copy left


def test_train_run_audits_and_reports_leakage(tmp_path: Path, cache: str):
    import tunevision as tv
    data = audit_folder(tmp_path)
    model = tv.fit(str(data), backbone="tiny_cnn", pretrained=False, cache_dir=cache, out=str(tmp_path / "runs"),
                   device="cpu", precision="fp32", mode="freeze", epochs=2, quiet=True)
    assert (model.run_dir / "audit" / "audit.csv").is_file()
    assert "audit" in json.loads((model.run_dir / "summary.json").read_text())["stages"]
    assert "without the 1 that duplicate a training image" in (model.run_dir / "report.html").read_text()
    # the run's audit read head training's first augmented view and cached the validation images' own: an audit
    # after the run computes no feature
    cached = set((Path(cache) / "features").iterdir())
    again = tv.audit(str(data), backbone="tiny_cnn", pretrained=False, cache_dir=cache, out=tmp_path / "again",
                     device="cpu", precision="fp32", mode="freeze", quiet=True)
    assert set((Path(cache) / "features").iterdir()) == cached
    assert again.summary["issues"] == json.loads((model.run_dir / "audit" / "audit.json").read_text())["issues"]
    off = tv.fit(str(data), backbone="tiny_cnn", pretrained=False, cache_dir=cache, out=str(tmp_path / "runs"),
                 device="cpu", precision="fp32", mode="freeze", epochs=1, audit=False, quiet=True)
    assert not (off.run_dir / "audit").exists()
    scratch = tv.fit(str(data), backbone="tiny_cnn", cache_dir=cache, out=str(tmp_path / "runs"), device="cpu",
                     precision="fp32", mode="scratch", epochs=1, quiet=True)
    assert not (scratch.run_dir / "audit").exists()
    assert "audit left out: the network starts untrained" in (scratch.run_dir / "train.log").read_text()


def test_embed_and_similar(tmp_path: Path, cache: str):
    import tunevision as tv
    from tunevision.cli.main import main
    data = make_class_folders(tmp_path / "data", n=6)
    model = tv.fit(str(data), backbone="tiny_cnn", pretrained=False, cache_dir=cache, out=str(tmp_path / "runs"),
                   device="cpu", precision="fp32", mode="freeze", epochs=1, quiet=True)
    query = data / "red" / "red_001.png"
    rows = model.embed([str(query), str(data / "blue")])
    assert rows.shape == (7, model.network.head.in_features) and np.isfinite(rows).all()
    r = CliRunner().invoke(main, ["embed", str(model.run_dir), "--out", str(tmp_path / "e.npy")])
    assert r.exit_code == 0, r.output
    feats, paths = np.load(tmp_path / "e.npy"), (tmp_path / "e.paths.txt").read_text().split()
    assert feats.shape == (12, rows.shape[1]) and len(paths) == 12
    assert np.allclose(feats[paths.index(str(query))], rows[0], atol=1e-4)
    r = CliRunner().invoke(main, ["similar", str(model.run_dir), str(query), "--top-k", "3",
                                  "--out", str(tmp_path / "sheet.png")])
    assert r.exit_code == 0, r.output
    first = next(line for line in r.output.splitlines() if line[:1].isdigit()).split()
    assert float(first[0]) > 0.999 and first[1] == str(query)  # the image itself is its own nearest
    assert Image.open(tmp_path / "sheet.png").size[0] > 100
    r = CliRunner().invoke(main, ["embed", str(model.run_dir), "--out", str(tmp_path / "e.txt")])
    assert r.exit_code == 2 and "write embeddings to a .npy or .parquet file" in r.output


def test_label_findings_name_classes_when_one_has_no_images():
    from tunevision.auditing.findings import Audited, label_findings
    x, y = clusters(n=40, classes=2)
    labels = np.where(y == 1, 2, 0)      # class 1 ("empty") has no image left
    labels[[5, 11]] = 2 - labels[[5, 11]]
    a = Audited([f"{i}.jpg" for i in range(len(y))], ["train"] * len(y), labels, ["a", "empty", "c"], x)
    name = {0: "a", 2: "c"}
    truth = {(i, name[labels[i]], name[2 - labels[i]]) for i in (5, 11)}
    found = {(f.index, f.given, f.suggested) for f in label_findings(a, 0)}
    assert found == truth


def test_audit_reads_an_augmented_view_where_head_training_caches_one():
    from types import SimpleNamespace

    from tunevision.classify.audit import AUDIT_VIEWS, audit_views
    from tunevision.classify.loops import AUTO_VIEW_BUDGET
    from tunevision.core.config import TrainConfig
    def data(n: int, classes=("ants", "bees")):
        return SimpleNamespace(train=[None] * n, dataset=SimpleNamespace(classes=list(classes)))
    assert AUDIT_VIEWS >= 1
    assert audit_views(data(245), TrainConfig()) == AUDIT_VIEWS
    # a pass over every training image for the audit alone; a budget's seconds are for training
    assert audit_views(data(AUTO_VIEW_BUDGET + 1), TrainConfig()) == 0
    assert audit_views(data(245), TrainConfig(time_budget="30")) == 0
    assert audit_views(data(245, ["raccoon"]), TrainConfig()) == 0  # one class: no label to doubt


def test_multilabel_flips_are_flagged_with_the_true_label_set_suggested():
    """Two independent labels carried by feature directions; a few images lose or gain one label."""
    from tunevision.auditing.labels import (
        find_multilabel_issues,
        out_of_fold_multilabel,
    )
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, (200, 3))
    w = rng.normal(0, 1, (4, 32)) * 4  # one direction per label, and one all images share (the heads see unit rows)
    x = truth @ w[:3] + w[3] + rng.normal(0, 1, (200, 32))
    noisy = truth.copy()
    flipped = [5, 50, 101, 150]
    for i in flipped:
        noisy[i, i % 3] ^= 1
    issues = find_multilabel_issues(noisy, out_of_fold_multilabel(x, noisy))
    assert {i for i, _, _ in issues} == set(flipped)
    assert all(list(suggested) == np.nonzero(truth[i])[0].tolist() for i, suggested, _ in issues)
    assert find_multilabel_issues(truth, out_of_fold_multilabel(x, truth)) == []


def test_multilabel_fixes_set_label_sets(tmp_path: Path):
    ds = Dataset(["a", "b", "c"], [Sample(str(tmp_path / "x.jpg"), 0, (0,)), Sample(str(tmp_path / "y.jpg"), 1, (1, 2))],
                 [], "test", multilabel=True)
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("path,action\nx.jpg,relabel:c;a\ny.jpg,relabel:\n")
    apply_fixes(ds, fixes, str(tmp_path))
    assert [(s.label, s.labels) for s in ds.train] == [(0, (0, 2)), (-1, ())]
    fixes.write_text("path,action\nx.jpg,relabel:a;d\n")
    with pytest.raises(TunevisionError, match="line 2: relabel to 'd'"):
        apply_fixes(ds, fixes, str(tmp_path))


@pytest.mark.parametrize("encoding,sep", [("cp1252", ";"), ("utf-16", "\t"), ("utf-8-sig", ",")])
def test_a_fixes_file_as_excel_saves_it(tmp_path: Path, encoding: str, sep: str):
    """audit.csv opened in Excel and saved back: a European Excel's ; and code page, "Unicode text", UTF-8."""
    ds = Dataset(["café", "thé"], [Sample(str(tmp_path / "x.jpg"), 0), Sample(str(tmp_path / "y.jpg"), 0)], [], "t")
    fixes = tmp_path / "fixes.csv"
    fixes.write_bytes(sep.join(["path", "issue", "action"]).encode(encoding) + "\n".join(
        ["", sep.join(["x.jpg", "label", "relabel:thé"]), sep.join(["y.jpg", "label", "drop"]), ""]).encode(
        encoding.replace("-sig", "").replace("utf-16", "utf-16-le")))
    apply_fixes(ds, fixes, str(tmp_path))
    assert [(Path(s.path).name, s.label) for s in ds.train] == [("x.jpg", 1)]
    (tmp_path / "book.csv").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(TunevisionError, match="an Excel workbook, not a CSV"):
        apply_fixes(ds, tmp_path / "book.csv", str(tmp_path))


def test_the_audit_reads_what_training_would_refuse(tmp_path):
    """One class, or a label on validation images alone, stops a training run but not the audit: it reads
    features, and a detector's one class of objects has duplicates too."""
    from conftest import COLOURS, make_image

    import tunevision as tv
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    rows = ["path,labels,split"]
    for i in range(10):
        make_image(COLOURS["blue" if i % 2 else "red"], rng).save(tmp_path / "images" / f"{i}.png")
        labels = "blue" if i % 2 else "red;rare" if i == 8 else "red"
        rows.append(f"images/{i}.png,\"{labels}\",{'val' if i >= 7 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    options = {"backbone": "tiny_cnn", "pretrained": False, "cache_dir": str(tmp_path / "c"), "device": "cpu"}
    with pytest.raises(TunevisionError, match="label 'rare' appears only in validation"):
        tv.fit(str(tmp_path / "labels.csv"), out=str(tmp_path / "runs"), quiet=True, epochs=1, **options)
    result = tv.audit(str(tmp_path / "labels.csv"), out=tmp_path / "audit", **options)
    assert result.summary["images"] == 10
    make_class_folders(tmp_path / "one", n=6, classes=("blue",))
    assert tv.audit(str(tmp_path / "one"), out=tmp_path / "audit1", **options).summary["images"] == 6
