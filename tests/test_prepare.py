"""data/prepare.py: fetch through pooch from a loopback HTTP server, verify, place; every failure
leaves the dataroot byte-for-byte as it was. Also the benchmark table against the real split files."""
import dataclasses
import errno
import hashlib
import http.server
import importlib.util
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zipfile
from collections import Counter

import numpy as np
import pytest
import scipy.io as sio

import provenance
import synthetic
import train
from conftest import ROOT, SHARED_XLSA17
from test_end_to_end import tiny_config

from data import prepare

PER_SEEN, PER_UNSEEN, FEATURE_DIM = (4, 2), 3, 64  # synthetic.write_archive's defaults


def tiny_table(per_seen=PER_SEEN, per_unseen=PER_UNSEEN, feature_dim=FEATURE_DIM) -> dict:
    """The real table with the counts of write_archive's small generated datasets."""
    n_tv, n_ts = per_seen
    return {name: dataclasses.replace(b, images=b.seen * (n_tv + n_ts) + b.unseen * per_unseen,
                                      trainval=b.seen * n_tv, test_seen=b.seen * n_ts,
                                      test_unseen=b.unseen * per_unseen, feature_dim=feature_dim)
            for name, b in prepare.BENCHMARKS.items()}


def tree(root):
    """Every path under root with its bytes' sha256 (folders: None): equal means byte-for-byte equal."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------ the HTTP server

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits[self.path] += 1
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        behaviour, body = self.server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) + (1000 if behaviour == "truncated" else 0)))
        self.end_headers()
        if behaviour == "drop":  # half the bytes, then a TCP reset
            self.wfile.write(body[:len(body) // 2])
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self.wfile.write(body)  # "truncated": the header promised 1000 bytes more

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.hits = {}, Counter()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Generated zips: the authors' layout, xlsa17's, and broken variants (bytes)."""
    d = tmp_path_factory.mktemp("archives")
    authors = synthetic.write_archive(d / "GSMFlow_data.zip", "authors").read_bytes()
    xlsa17 = synthetic.write_archive(d / "xlsa17.zip", "xlsa17", datasets=["AWA2", "CUB"]).read_bytes()
    only_awa2 = synthetic.write_archive(d / "awa2.zip", "authors", datasets=["AWA2"]).read_bytes()
    more_unseen = synthetic.write_archive(d / "more.zip", "authors", datasets=["AWA2"], per_unseen=4).read_bytes()
    # flip a byte inside the first member's compressed data: the zip opens, the member's CRC fails
    info = zipfile.ZipFile(d / "awa2.zip").infolist()[0]
    header = 30 + len(info.filename.encode()) + len(info.extra)
    bad_crc = bytearray(only_awa2)
    bad_crc[info.header_offset + header + info.compress_size // 2] ^= 0xFF
    return dict(authors=authors, xlsa17=xlsa17, only_awa2=only_awa2, more_unseen=more_unseen,
                bad_crc=bytes(bad_crc), not_zip=b"<!DOCTYPE html><html>Dropbox - sign in</html>" * 50)


@pytest.fixture
def dataroot(tmp_path):
    """A data/ folder as a user has it: the tracked files and one dataset already placed."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "README.md").write_text("# Benchmark data\n")
    (root / ".gitignore").write_text("*\n!.gitignore\n!README.md\n")
    synthetic.generate(root / "FLO", "FLO", seed=9, per_seen=(2, 1), per_unseen=2, feature_dim=8, layout="epgn")
    return root


@pytest.fixture
def one_torch_thread():
    """The tiny run's flow has 54k parameters: a second thread costs more than it gives (much more
    on a busy machine)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_prepare(*argv, table=None):
    return prepare.main([str(a) for a in argv], tiny_table() if table is None else table)


# --------------------------------------------------------------------------------- tests

def test_help_names_the_sources_and_options():
    out = subprocess.run([sys.executable, "-m", "data.prepare", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for text in ("GSMFlow_data.zip?dl=1", "xlsa17.zip", "--from", "--url", "--dataroot", "--cache", "--force"):
        assert text in out.stdout


@pytest.mark.skipif(not SHARED_XLSA17.is_dir(), reason="no real split files (GSMFLOW_XLSA17_SPLITS, default ../shared/xlsa17: tests/conftest.py)")
@pytest.mark.parametrize("dataset, stem", [("AWA2", "att"), ("APY", "att"), ("CUB", "sent"), ("FLO", "att")])
def test_benchmark_table_matches_the_real_split_files(dataset, stem):
    m = sio.loadmat(str(SHARED_XLSA17 / f"{dataset}_{stem}_splits.mat"))
    expected = prepare.BENCHMARKS[dataset]
    locs = {k: m[k].reshape(-1).astype(np.int64) for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")}
    every_image = np.sort(np.concatenate(list(locs.values())))
    assert np.array_equal(every_image, np.arange(1, expected.images + 1))  # the three splits partition 1..N
    assert [v.size for v in locs.values()] == [expected.trainval, expected.test_seen, expected.test_unseen]
    assert m["att"].shape == (expected.semantic_dims[stem], expected.seen + expected.unseen)


@pytest.mark.skipif(not SHARED_XLSA17.is_dir(), reason="no real split files (GSMFLOW_XLSA17_SPLITS, default ../shared/xlsa17: tests/conftest.py)")
def test_real_split_files_pass_the_real_counts(tmp_path):
    """The real splits with a generated 8-d res101.mat: every count but the feature width is the table's."""
    src = tmp_path / "src"
    synthetic.features_for_real_splits(SHARED_XLSA17 / "APY_att_splits.mat", src / "APY", feature_dim=8)
    table = {"APY": dataclasses.replace(prepare.BENCHMARKS["APY"], feature_dim=8)}
    assert run_prepare("APY", "--from", src, "--dataroot", tmp_path / "data", table=table) == 0
    table = {"APY": dataclasses.replace(prepare.BENCHMARKS["APY"], feature_dim=8, test_unseen=7925)}
    assert run_prepare("APY", "--from", src, "--dataroot", tmp_path / "data2", table=table) == 2
    assert not (tmp_path / "data2").exists()  # created for this run, removed with it


def test_download_verify_place_then_train(server, archives, dataroot, tmp_path, capsys, one_torch_thread):
    server.routes["/GSMFlow_data.zip"] = ("ok", archives["authors"])
    url, cache = server.url("/GSMFlow_data.zip"), tmp_path / "cache"
    before = tree(dataroot)
    assert run_prepare("AWA2", "APY", "CUB", "--url", url, "--cache", cache, "--dataroot", dataroot) == 0
    out = capsys.readouterr().out
    assert "APY (xlsa17, att_splits.mat): 20 seen + 12 unseen classes" in out
    assert "CUB (E-PGN): 150 seen + 50 unseen classes" in out
    assert server.hits["/GSMFlow_data.zip"] == 1
    assert {k: v for k, v in tree(dataroot).items() if k in before} == before  # the rest untouched
    for name, files in (("AWA2", ["att_splits.mat", "res101.mat"]), ("CUB", ["data.mat", "label.mat"])):
        sums = provenance.read_sums(dataroot / name)
        assert sorted(sums) == files
        for f in files:
            assert sums[f] == {"sha256": provenance.sha256_of(dataroot / name / f),
                               "size": (dataroot / name / f).stat().st_size}
    # downloaded once: the next dataset comes from the cache
    assert run_prepare("FLO", "--url", url, "--cache", cache, "--dataroot", tmp_path / "other") == 0
    assert server.hits["/GSMFlow_data.zip"] == 1

    summary = train.run(tiny_config(dataroot, tmp_path / "out", gen_nepoch=5, batchsize=32, hidden_dim=64,
                                    eval_start=9, evl_interval=10, nSample=20, classifier_epochs=3))
    assert summary["paper"]["iteration"] == 10  # 80 trainval images / 32 = 2 iterations x 5 epochs
    config = json.loads((tmp_path / "out" / "APY" / summary["run_dir"].split("/")[-1] / "config.json").read_text())
    for record in (summary["data_files"], config["data_files"]):
        assert [r["path"] for r in record] == [str(dataroot / "APY" / "res101.mat"),
                                               str(dataroot / "APY" / "att_splits.mat")]
        assert all(r["SHA256SUMS"] == "matches" and r["sha256"] == provenance.sha256_of(r["path"])
                   and r["size"] == (dataroot / "APY" / r["path"].split("/")[-1]).stat().st_size for r in record)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/GSMFlow_data.zip"


FAILURES = {  # served bytes -> (route behaviour, archive, asked dataset, the error line)
    "truncated": ("truncated", "authors", "AWA2", r"GSMFlow_data\.zip: the download broke off .*--from=PATH"),
    "dropped": ("drop", "authors", "AWA2", r"GSMFlow_data\.zip: the download broke off .*--from=PATH"),
    "not a zip": ("ok", "not_zip", "AWA2", r"GSMFlow_data\.zip: what came back is not a zip archive "
                                           r"\(it starts with b'<!DOCTYPE html>.*removed it from the cache"),
    "bad CRC": ("ok", "bad_crc", "AWA2", r"GSMFlow_data\.zip: GSMFlow_data/data/AWA2/\S+\.mat is corrupt "
                                         r"\(Bad CRC-32 .*\); removed the archive from the cache: run again"),
    "dataset missing": ("ok", "only_awa2", "APY", r"GSMFlow_data\.zip: no APY in it .*datasets found: AWA2$"),
    "wrong counts": ("ok", "more_unseen", "AWA2", r"GSMFlow_data\.zip:GSMFlow_data/data/AWA2/res101\.mat: "
                                                  r"'features' has 280 columns \(images\), the AWA2 benchmark "
                                                  r"has 270$"),
    "not found": (None, None, "AWA2", r"GSMFlow_data\.zip: the server answered 404 Not Found; download it by "
                                      r"hand .*python -m data.prepare AWA2 --from=PATH_TO_THE_ZIP$"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_failure_is_one_line_and_leaves_data_unchanged(case, server, archives, dataroot, tmp_path, capsys):
    behaviour, archive, dataset, message = FAILURES[case]
    path = "/" + case.replace(" ", "_") + "/GSMFlow_data.zip"
    if behaviour:
        server.routes[path] = (behaviour, archives[archive])
    before = tree(dataroot)
    code = run_prepare(dataset, "--url", server.url(path), "--cache", tmp_path / "cache", "--dataroot", dataroot,
                       "--retries", 0)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert re.search(message, errors[0]), errors[0]
    assert tree(dataroot) == before
    kept = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    if case in ("truncated", "dropped", "not a zip", "bad CRC", "not found"):  # a broken download is not kept
        assert kept == []
    else:  # a good archive stays in the cache, for the next dataset, with its sha256 recorded beside it
        assert sorted(p.suffix for p in kept) == [".sha256", ".zip"]


def test_no_network_names_the_url_and_from(dataroot, tmp_path, capsys):
    before, url = tree(dataroot), closed_port_url()
    assert run_prepare("--url", url, "--cache", tmp_path / "cache", "--dataroot", dataroot, "--retries", 0) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error == (f"error: {url}: cannot download it ([Errno 111] Connection refused); download it by hand "
                     f"(e.g. in a browser) and run: python -m data.prepare --from=PATH_TO_THE_ZIP")
    assert tree(dataroot) == before


def test_retries_then_fails(server, archives, dataroot, tmp_path):
    server.routes["/flaky.zip"] = ("drop", archives["authors"])
    assert run_prepare("AWA2", "--url", server.url("/flaky.zip"), "--cache", tmp_path, "--dataroot", dataroot,
                       "--retries", 1) == 2
    assert server.hits["/flaky.zip"] == 2


def test_source_without_the_dataset_is_refused_before_downloading(dataroot, capsys):
    before = tree(dataroot)
    assert run_prepare("FLO", "--source", "xlsa17", "--url", closed_port_url(), "--dataroot", dataroot) == 2
    assert capsys.readouterr().err == ("error: --source=xlsa17: its archive holds AWA2, APY, CUB, not FLO; "
                                       "use --source=authors or --from=PATH\n")
    assert tree(dataroot) == before


def test_from_a_zip_and_from_a_folder_place_the_same_files(archives, tmp_path, capsys):
    zip_path = tmp_path / "xlsa17.zip"
    zip_path.write_bytes(archives["xlsa17"])
    assert run_prepare("AWA2", "CUB", "--from", zip_path, "--dataroot", tmp_path / "a") == 0
    assert "CUB has the 312-d attributes only: train with python train_CUB.py --class_embedding=att" \
        in capsys.readouterr().out
    zipfile.ZipFile(zip_path).extractall(tmp_path / "unpacked")
    assert run_prepare("AWA2", "CUB", "--from", tmp_path / "unpacked", "--dataroot", tmp_path / "b") == 0
    # the dataset folder itself works too
    assert run_prepare("CUB", "--from", tmp_path / "unpacked" / "xlsa17" / "data" / "CUB",
                       "--dataroot", tmp_path / "c") == 0
    data_files = lambda root: {k: v for k, v in tree(root).items() if not k.endswith("SHA256SUMS")}
    assert data_files(tmp_path / "a") == data_files(tmp_path / "b")
    assert data_files(tmp_path / "c") == {k: v for k, v in data_files(tmp_path / "a").items() if "CUB" in k}
    assert sorted(data_files(tmp_path / "c")) == ["CUB", "CUB/att_splits.mat", "CUB/res101.mat"]


def test_existing_different_folder_is_kept_and_force_moves_it_aside(archives, dataroot, tmp_path, capsys):
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    old_flo = tree(dataroot / "FLO")
    before = tree(dataroot)
    assert run_prepare("AWA2", "FLO", "--from", zip_path, "--dataroot", dataroot) == 2
    assert capsys.readouterr().err == (f"error: {dataroot / 'FLO'} already holds other files; not overwriting it: "
                                       f"move it away, or run again with --force to keep it as "
                                       f"FLO.replaced-<UTC time>/\n")
    assert tree(dataroot) == before  # AWA2 was fine, but nothing is placed when one dataset stops
    assert run_prepare("AWA2", "FLO", "--from", zip_path, "--dataroot", dataroot, "--force") == 0
    (aside,) = dataroot.glob("FLO.replaced-*")
    assert tree(aside) == old_flo
    assert sorted(p.name for p in (dataroot / "FLO").iterdir()) == ["SHA256SUMS", "data.mat", "label.mat"]
    # the same files again: nothing to do, nothing moved
    after = tree(dataroot)
    assert run_prepare("FLO", "--from", zip_path, "--dataroot", dataroot) == 0
    assert "already holds these files; left as it is" in capsys.readouterr().out
    assert tree(dataroot) == after


def test_not_enough_disk_space(archives, dataroot, tmp_path, monkeypatch, capsys):
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    before = tree(dataroot)
    with monkeypatch.context() as patch:
        patch.setattr(prepare, "free_bytes", lambda path: 1000)
        assert run_prepare("AWA2", "--from", zip_path, "--dataroot", dataroot) == 2
    assert capsys.readouterr().err == f"error: {dataroot}: not enough disk space: the files need 235.5 KB, 1.0 KB free\n"
    assert tree(dataroot) == before

    def disk_fills(self, member, dest):  # the space check passed, then the disk filled up while unpacking
        dest.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(prepare.Archive, "copy", disk_fills)
    assert run_prepare("AWA2", "--from", zip_path, "--dataroot", dataroot) == 2
    assert capsys.readouterr().err == (f"error: {dataroot}: cannot unpack att_splits.mat of AWA2 there "
                                       f"(no space left on the device)\n")
    assert tree(dataroot) == before


def test_ctrl_c_leaves_data_unchanged(archives, dataroot, tmp_path, monkeypatch, capsys):
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, "verify", interrupted)  # files unpacked, not yet placed
    before = tree(dataroot)
    assert run_prepare("AWA2", "--from", zip_path, "--dataroot", dataroot) == 130
    assert capsys.readouterr().err == f"error: interrupted; {dataroot} is as it was\n"
    assert tree(dataroot) == before


def test_the_script_runs_from_the_repo_root_with_the_real_table(archives, tmp_path):
    """As a user runs it: the generated AWA2 is small, so the real counts refuse it."""
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    out = subprocess.run([sys.executable, "-m", "data.prepare", "AWA2", f"--from={zip_path}",
                          f"--dataroot={tmp_path / 'data'}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == (f"error: {zip_path}:GSMFlow_data/data/AWA2/res101.mat: 'features' has 270 columns "
                          f"(images), the AWA2 benchmark has {prepare.BENCHMARKS['AWA2'].images}\n")
    assert not (tmp_path / "data").exists()


COUNT_CHANGES = {  # a table that differs from the generated AWA2 in one count -> the line naming it
    "images": (dict(images=271), "res101.mat: 'features' has 270 columns (images), the AWA2 benchmark has 271"),
    "feature_dim": (dict(feature_dim=2048), "res101.mat: 'features' has 64 rows (feature dimension), the AWA2 "
                                            "benchmark has 2048"),
    "classes": (dict(unseen=11), "att_splits.mat: 'att' has 50 columns (classes), the AWA2 benchmark has 51"),
    "semantic_dim": (dict(semantic_dims={"att": 84}), "att_splits.mat: 'att' has 85 rows (semantic dimension), "
                                                     "the AWA2 benchmark has 84"),
    "seen": (dict(seen=41, unseen=9), "att_splits.mat: 'trainval_loc' covers 40 seen classes, the AWA2 benchmark "
                                      "has 41"),
    "trainval": (dict(trainval=161), "att_splits.mat: 'trainval_loc' has 160 rows, the AWA2 benchmark has 161"),
    "test_seen": (dict(test_seen=79), "att_splits.mat: 'test_seen_loc' has 80 rows, the AWA2 benchmark has 79"),
    "test_unseen": (dict(test_unseen=31), "att_splits.mat: 'test_unseen_loc' has 30 rows, the AWA2 benchmark "
                                          "has 31"),
}


@pytest.mark.parametrize("count", list(COUNT_CHANGES))
def test_xlsa17_count_mismatch_names_file_and_number(count, archives, tmp_path, capsys):
    zip_path = tmp_path / "xlsa17.zip"
    zip_path.write_bytes(archives["xlsa17"])
    change, message = COUNT_CHANGES[count]
    table = tiny_table()
    table["AWA2"] = dataclasses.replace(table["AWA2"], **change)
    assert run_prepare("AWA2", "--from", zip_path, "--dataroot", tmp_path / "data", table=table) == 2
    assert capsys.readouterr().err == f"error: {zip_path}:xlsa17/data/AWA2/{message}\n"


def broken_copies(unpacked):
    """Folders holding AWA2 in ways that cannot be placed -> the line each gives."""
    awa2 = unpacked / "xlsa17" / "data" / "AWA2"
    only_features = unpacked.parent / "only_features" / "AWA2"
    only_features.mkdir(parents=True)
    (only_features / "res101.mat").write_bytes((awa2 / "res101.mat").read_bytes())
    no_labels = unpacked.parent / "no_labels" / "AWA2"
    no_labels.mkdir(parents=True)
    (no_labels / "att_splits.mat").write_bytes((awa2 / "att_splits.mat").read_bytes())
    sio.savemat(no_labels / "res101.mat", {"features": sio.loadmat(str(awa2 / "res101.mat"))["features"]})
    twice = unpacked.parent / "twice"
    for copy in ("a", "b"):
        shutil.copytree(awa2, twice / copy / "AWA2")
    return {only_features.parent: f"{only_features.parent}: only_features/AWA2/ holds only res101.mat: neither "
                                  f"res101.mat + att_splits.mat/sent_splits.mat (xlsa17) nor data.mat + label.mat "
                                  f"(E-PGN)",
            no_labels.parent: f"{no_labels / 'res101.mat'}: missing key 'labels' (found: features)",
            twice: f"{twice}: AWA2 is in several folders (twice/a/AWA2, twice/b/AWA2); unpack it and pass the one "
                   f"you want with --from=FOLDER"}


def test_unusable_dataset_folders_are_named(archives, tmp_path, capsys):
    zip_path = tmp_path / "xlsa17.zip"
    zip_path.write_bytes(archives["xlsa17"])
    zipfile.ZipFile(zip_path).extractall(tmp_path / "unpacked")
    for folder, message in broken_copies(tmp_path / "unpacked").items():
        assert run_prepare("AWA2", "--from", folder, "--dataroot", tmp_path / "data") == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "data").exists()


def test_the_sources_layout_wins_when_a_dataset_is_there_twice(archives, tmp_path):
    both = tmp_path / "both.zip"
    with zipfile.ZipFile(both, "w") as out:
        for name in ("authors", "xlsa17"):
            (tmp_path / name).write_bytes(archives[name])
            with zipfile.ZipFile(tmp_path / name) as z:
                for member in z.namelist():
                    out.writestr(member, z.read(member))
    archive = prepare.Archive(both, "both.zip")
    assert archive.find("CUB", "epgn") == ("GSMFlow_data/data/CUB", {"data.mat": "GSMFlow_data/data/CUB/data.mat",
                                                                     "label.mat": "GSMFlow_data/data/CUB/label.mat"})
    assert archive.find("CUB", "xlsa17")[0] == "xlsa17/data/CUB"
    with pytest.raises(prepare.PrepareError, match=r"CUB is in several folders \(GSMFlow_data/data/CUB, xlsa17"):
        archive.find("CUB")


def test_epgn_counts_that_differ_are_printed_as_warnings(archives, tmp_path, capsys):
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    table = tiny_table()
    real = prepare.BENCHMARKS["CUB"].test_unseen
    table["CUB"] = dataclasses.replace(table["CUB"], test_unseen=real)
    assert run_prepare("CUB", "--from", zip_path, "--dataroot", tmp_path / "data", table=table) == 0
    assert (f"warning: {zip_path}:GSMFlow_data/data/CUB/data.mat: 'test_unseen_fea' rows 150, xlsa17's CUB split "
            f"has {real} (kept: E-PGN's counts are not documented)") in capsys.readouterr().out.splitlines()
    table["CUB"] = dataclasses.replace(table["CUB"], feature_dim=2048)  # the width is structure: refused
    assert run_prepare("CUB", "--from", zip_path, "--dataroot", tmp_path / "data2", table=table) == 2
    assert "'train_fea' has 64 columns (feature dimension), expected 2048" in capsys.readouterr().err


def test_bad_options_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        prepare.main(["--from=x.zip", "--url=http://127.0.0.1/x.zip"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: --from and --url cannot be combined: --from reads a file here, "
                                       "--url downloads one\n")
    with pytest.raises(SystemExit):
        prepare.main(["AWA1"])
    assert capsys.readouterr().err == "error: option DATASETS: 'AWA1' is not one of AWA2, APY, CUB, FLO\n"


# ----------------------------------------------------------------------------- provenance

def test_provenance_hashes_every_file_and_compares_with_sha256sums(tmp_path):
    (tmp_path / "a.mat").write_bytes(b"abc")
    (tmp_path / "b.mat").write_bytes(b"defg")
    (tmp_path / "d.mat").write_bytes(b"hij")
    provenance.write_sums(tmp_path, ["a.mat", "b.mat", "d.mat"], ["a comment"])
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path).returncode == 0
    (tmp_path / "a.mat").write_bytes(b"abX")  # same size, other bytes: was recorded with the old hash
    (tmp_path / "b.mat").write_bytes(b"changed")
    (tmp_path / "c.mat").write_bytes(b"unlisted")
    records = provenance.describe_files([tmp_path / n for n in ("a.mat", "b.mat", "c.mat", "d.mat")])
    assert [(r["size"], r["sha256"]) for r in records] == [(3, hashlib.sha256(b"abX").hexdigest()),
                                                          (7, hashlib.sha256(b"changed").hexdigest()),
                                                          (8, hashlib.sha256(b"unlisted").hexdigest()),
                                                          (3, hashlib.sha256(b"hij").hexdigest())]
    assert [r["SHA256SUMS"] for r in records] == ["differs", "differs", "not listed", "matches"]


def test_synthetic_runs_record_their_generated_files(tmp_path):
    cfg = train.parse_overrides(train.Config(dataset="APY", out_dir=str(tmp_path)), ["--synthetic"])
    data = train.prepare_data(cfg)
    folder = tmp_path / "synthetic_data" / "APY"
    assert [str(p) for p in data.files] == [str(folder / "res101.mat"), str(folder / "att_splits.mat")]
    records = provenance.describe_files(data.files)
    assert [r["sha256"] for r in records] == [provenance.sha256_of(p) for p in data.files]


# ------------------------------------------------------------- issue 15: archives and placement

def test_sources_use_https_and_have_a_pin_field():
    for name, source in prepare.SOURCES.items():
        assert source.url.startswith("https://"), name
        assert source.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", source.sha256), name


def errors(capsys):
    """The error lines of stderr (pooch logs its downloads there too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def cached_files(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_a_pinned_sha256_is_checked_on_download_and_on_reuse(server, archives, tmp_path, monkeypatch, capsys):
    server.routes["/pinned/GSMFlow_data.zip"] = ("ok", archives["authors"])
    argv = ("AWA2", "--url", server.url("/pinned/GSMFlow_data.zip"), "--cache", tmp_path / "cache", "--retries", 0)
    wrong = dataclasses.replace(prepare.SOURCES["authors"], sha256="0" * 64)
    monkeypatch.setitem(prepare.SOURCES, "authors", wrong)
    assert run_prepare(*argv, "--dataroot", tmp_path / "a") == 2
    (error,) = errors(capsys)
    assert re.fullmatch(r"error: \S+GSMFlow_data\.zip: the download's sha256 is [0-9a-f]{64}, not the pinned "
                        r"0{64} \(Source\.sha256\); removed it.*", error), error
    assert cached_files(tmp_path / "cache") == [] and not (tmp_path / "a").exists()

    good = hashlib.sha256(archives["authors"]).hexdigest()
    monkeypatch.setitem(prepare.SOURCES, "authors", dataclasses.replace(wrong, sha256=good))
    assert run_prepare(*argv, "--dataroot", tmp_path / "b") == 0
    assert server.hits["/pinned/GSMFlow_data.zip"] == 2
    (cached,) = (tmp_path / "cache").glob("*GSMFlow_data.zip")
    tampered = bytearray(cached.read_bytes())
    tampered[100] ^= 0xFF  # same size, other bytes: reused unchecked before
    cached.write_bytes(bytes(tampered))
    assert run_prepare(*argv, "--dataroot", tmp_path / "c") == 0
    assert "differs from its sha256" in capsys.readouterr().out
    assert server.hits["/pinned/GSMFlow_data.zip"] == 3 and cached.read_bytes() == archives["authors"]


def test_an_unpinned_archive_has_its_sha256_recorded_and_checked_on_reuse(server, archives, tmp_path, capsys):
    server.routes["/recorded/GSMFlow_data.zip"] = ("ok", archives["authors"])
    assert prepare.SOURCES["authors"].sha256 is None  # unknown: see the comment in SOURCES
    argv = ("AWA2", "--url", server.url("/recorded/GSMFlow_data.zip"), "--cache", tmp_path / "cache",
            "--retries", 0)
    assert run_prepare(*argv, "--dataroot", tmp_path / "a") == 0
    (cached,) = (tmp_path / "cache").glob("*GSMFlow_data.zip")
    record = cached.with_name(cached.name + ".sha256")
    assert record.read_text().split()[0] == hashlib.sha256(archives["authors"]).hexdigest()
    assert subprocess.run(["sha256sum", "-c", "--quiet", record.name], cwd=record.parent).returncode == 0

    tampered = bytearray(cached.read_bytes())
    tampered[100] ^= 0xFF
    cached.write_bytes(bytes(tampered))
    assert run_prepare(*argv, "--dataroot", tmp_path / "b") == 0
    assert "differs from its sha256" in capsys.readouterr().out
    assert server.hits["/recorded/GSMFlow_data.zip"] == 2 and cached.read_bytes() == archives["authors"]

    cached.unlink()  # the server now has other bytes than the first download: refused, the record names it
    server.routes["/recorded/GSMFlow_data.zip"] = ("ok", archives["only_awa2"])
    assert run_prepare(*argv, "--dataroot", tmp_path / "c") == 2
    (error,) = errors(capsys)
    assert f"not the {hashlib.sha256(archives['authors']).hexdigest()} recorded in {record}" in error
    assert cached_files(tmp_path / "cache") == [record.name] and not (tmp_path / "c").exists()


def zip_with_broken_central_directory(good: bytes) -> bytes:
    """Passes zipfile.is_zipfile (the end record is intact), fails zipfile.ZipFile."""
    broken = bytearray(good)
    at = broken.find(b"PK\x01\x02")
    broken[at:at + 4] = b"XX\x01\x02"
    return bytes(broken)


def test_a_cached_zip_that_does_not_open_is_removed(server, archives, tmp_path, capsys):
    import io
    broken = zip_with_broken_central_directory(archives["authors"])
    assert zipfile.is_zipfile(io.BytesIO(broken))
    server.routes["/cd/GSMFlow_data.zip"] = ("ok", broken)
    argv = ("AWA2", "--url", server.url("/cd/GSMFlow_data.zip"), "--cache", tmp_path / "cache", "--retries", 0)
    assert run_prepare(*argv, "--dataroot", tmp_path / "a") == 2
    (error,) = errors(capsys)
    assert "not a zip archive" in error and "removed it from the cache" in error
    assert cached_files(tmp_path / "cache") == []
    server.routes["/cd/GSMFlow_data.zip"] = ("ok", archives["authors"])  # fixed upstream: the next run works
    assert run_prepare(*argv, "--dataroot", tmp_path / "a") == 0


def patched_first_member(good: bytes, flag: int | None = None, method: int | None = None) -> bytes:
    """The zip with its first member's flag bits or compression method rewritten (local and central header)."""
    import io
    data = bytearray(good)
    local = zipfile.ZipFile(io.BytesIO(good)).infolist()[0].header_offset
    central = data.find(b"PK\x01\x02")
    for at, field in ((local + 6, flag), (central + 8, flag), (local + 8, method), (central + 10, method)):
        if field is not None:
            data[at:at + 2] = struct.pack("<H", field)
    return bytes(data)


@pytest.mark.parametrize("case, change, message", [
    ("encrypted", dict(flag=1), r"GSMFlow_data/data/AWA2/att_splits\.mat is encrypted"),
    ("deflate64", dict(method=9), r"GSMFlow_data/data/AWA2/att_splits\.mat uses compression method 9 \(Deflate64\)"),
])
def test_encrypted_or_unsupported_members_are_one_line(case, change, message, archives, tmp_path, capsys):
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(patched_first_member(archives["only_awa2"], **change))
    assert run_prepare("AWA2", "--from", zip_path, "--dataroot", tmp_path / "data") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert re.search(message, error) and "--from=FOLDER" in error, error
    assert not (tmp_path / "data").exists()


def test_leftover_staging_folders_of_killed_runs_are_removed(archives, dataroot, tmp_path, capsys):
    import fcntl
    import os
    import time
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    killed = ("import os, signal, sys, tempfile, pathlib\n"  # a run SIGKILLed while unpacking
              "sys.path[:0] = ['.', 'data']\n"
              "import prepare\n"
              "staging = pathlib.Path(tempfile.mkdtemp(prefix='.prepare-', dir=sys.argv[1]))\n"
              "prepare.lock_staging(staging)\n"
              "(staging / 'AWA2').mkdir()\n"
              "(staging / 'AWA2' / 'res101.mat').write_bytes(b'half')\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", killed, str(dataroot)], cwd=ROOT).returncode == -9
    (dead,) = dataroot.glob(".prepare-*")
    assert (dead / ".lock").is_file() and (dead / "AWA2" / "res101.mat").is_file()
    old = dataroot / ".prepare-old"  # an older version's folder, no lock, a day old
    (old / "APY").mkdir(parents=True)
    os.utime(old, (time.time() - 86400, time.time() - 86400))
    live = dataroot / ".prepare-live"  # another run, still going
    live.mkdir()
    (live / ".lock").touch()
    with open(live / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_prepare("AWA2", "--from", zip_path, "--dataroot", dataroot) == 0
    assert not dead.exists() and not old.exists() and live.is_dir()
    assert "removed 2 staging folder(s) left by interrupted runs" in capsys.readouterr().out
    assert sorted(p.name for p in dataroot.iterdir() if p.name.startswith(".prepare-")) == [".prepare-live"]


def test_a_failed_rename_rolls_every_dataset_back(archives, dataroot, tmp_path, monkeypatch, capsys):
    import os
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    before = tree(dataroot)
    real_rename, refusals = os.rename, []

    def refuses_flo(src, dst, *a, **k):  # AWA2 is placed first, FLO's old folder moved aside, then this
        if str(dst) == str(dataroot / "FLO") and len(refusals) < times:
            refusals.append(src)
            raise OSError(errno.EACCES, "Permission denied", str(dst))
        return real_rename(src, dst, *a, **k)
    monkeypatch.setattr(os, "rename", refuses_flo)
    times = 1
    assert run_prepare("AWA2", "FLO", "--from", zip_path, "--dataroot", dataroot, "--force") == 2
    assert capsys.readouterr().err == f"error: {dataroot / 'FLO'}: Permission denied\n"
    assert tree(dataroot) == before  # AWA2 taken back, FLO's old folder back in place
    times = 3  # the undo is refused too: the line says where the old FLO is
    assert run_prepare("AWA2", "FLO", "--from", zip_path, "--dataroot", dataroot, "--force") == 2
    (aside,) = dataroot.glob("FLO.replaced-*")
    assert capsys.readouterr().err == (f"error: placing the datasets failed ({dataroot / 'FLO'}: Permission denied) "
                                       f"and could not be undone: FLO is at {aside} (Permission denied)\n")
    assert not (dataroot / "AWA2").exists()  # the other steps were undone


def test_ctrl_c_between_two_renames_is_rolled_back(archives, dataroot, tmp_path, monkeypatch, capsys):
    import os
    import signal
    zip_path = tmp_path / "GSMFlow_data.zip"
    zip_path.write_bytes(archives["authors"])
    before = tree(dataroot)
    real_rename = os.rename

    def ctrl_c_after_moving_aside(src, dst, *a, **k):
        real_rename(src, dst, *a, **k)
        if ".replaced-" in str(dst):  # the old FLO is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(os, "rename", ctrl_c_after_moving_aside)
    assert run_prepare("AWA2", "FLO", "--from", zip_path, "--dataroot", dataroot, "--force") == 130
    assert capsys.readouterr().err == f"error: interrupted; {dataroot} is as it was\n"
    assert tree(dataroot) == before
