"""Fetching by exact version and hash through the registry interface, served from local files
(the same code path as the network registries): pinning, mismatches refused, the archive
cache, npm's integrity, Debian's .dsc checksums, and safe, cached snapshots."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import pytest

from jaxrepair.corpus.snapshots import SnapshotError, check_snapshot, snapshot, tree_sha256
from jaxrepair.corpus.sources import SourceError, SourceSpec, fetch, pin
from jaxrepair.envs import deps

from .conftest import FILES, fake_npm, fake_pypi, make_tarball, read_tree


def test_pin_and_fetch_verify_the_pypi_sdist(tmp_path, sdist, pypi_spec):
    spec = pin("pypi", "minicalc", "1.0.0", index=pypi_spec.index)
    assert spec.hash == "sha256:" + hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert spec.filename == "minicalc-1.0.0.tar.gz"
    with pytest.raises(SourceError, match="no version '9.9'"):
        pin("pypi", "minicalc", "9.9", index=pypi_spec.index)
    [archive] = fetch(spec)
    assert archive.read_bytes() == sdist.read_bytes()
    # a cache hit: the registry is gone, the verified archive is still there
    shutil.rmtree(tmp_path / "registry")
    assert fetch(spec) == [archive]


def test_a_hash_that_differs_from_the_pin_is_refused(tmp_path, sdist, pypi_spec):
    wrong = SourceSpec(
        "pypi", "minicalc", "1.0.0", "sha256:" + "0" * 64, sdist.name, pypi_spec.index
    )
    with pytest.raises(SourceError) as e:
        fetch(wrong)
    msg = str(e.value)
    assert "\n" not in msg and "the manifest pins sha256:000" in msg and "refusing" in msg
    # the registry states the pinned hash, but the bytes it serves are different
    other = make_tarball(tmp_path / "x" / "evil-1.0.tar.gz", "evil-1.0", {"evil.py": "x = 1\n"})
    pinned = "a" * 64
    index = fake_pypi(tmp_path / "reg2", "evil", "1.0", other, stated_sha256=pinned)
    spec = SourceSpec("pypi", "evil", "1.0", f"sha256:{pinned}", other.name, index)
    with pytest.raises(SourceError, match=r"hashes to sha256:[0-9a-f]{64}, the manifest pins"):
        fetch(spec)
    with pytest.raises(SourceError, match="is not 'sha256:<hex>'"):
        SourceSpec("pypi", "evil", "1.0", "md5:abc")


def test_npm_tarballs_are_pinned_by_their_integrity(tmp_path):
    tgz = make_tarball(
        tmp_path / "left-pad-1.3.0.tgz", "package", {"index.js": "module.exports = 1;\n"}
    )
    index = fake_npm(tmp_path / "reg", "left-pad", "1.3.0", tgz)
    spec = pin("npm", "left-pad", "1.3.0", index=index)
    assert spec.hash == "sha512:" + hashlib.sha512(tgz.read_bytes()).hexdigest()
    tree, _ = snapshot(fetch(spec))
    assert (tree / "index.js").read_text() == "module.exports = 1;\n"  # package/ stripped
    bad = SourceSpec("npm", "left-pad", "1.3.0", "sha512:" + "1" * 128, spec.filename, index)
    with pytest.raises(SourceError, match="the registry states sha512:"):
        fetch(bad)


def test_debian_sources_follow_the_pinned_dsc(tmp_path):
    pool = tmp_path / "pool"
    orig = make_tarball(pool / "hello_1.0.orig.tar.gz", "hello-1.0", {"hello.c": "int main(){}\n"})
    deb = make_tarball(pool / "hello_1.0-1.debian.tar.gz", "debian", {"control": "Source: hello\n"})
    sums = "".join(
        f" {hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_size} {p.name}\n"
        for p in (orig, deb)
    )
    (pool / "hello_1.0-1.dsc").write_text(
        f"Source: hello\nVersion: 1.0-1\nChecksums-Sha256:\n{sums}"
    )
    spec = pin("debian", "hello", "1.0-1", dsc_url=(pool / "hello_1.0-1.dsc").as_uri())
    tree, _ = snapshot(fetch(spec))
    assert (tree / "hello.c").is_file() and (tree / "debian" / "control").is_file()
    # the .dsc pins each tarball: a tampered orig tarball is refused (cache emptied first)
    orig.write_bytes(orig.read_bytes() + b"tampered")
    shutil.rmtree(deps.cache_dir() / "corpus" / "archives")
    with pytest.raises(SourceError, match="hello_1.0.orig.tar.gz hashes to"):
        fetch(spec)


def test_snapshot_is_unpacked_once_and_checked(sdist, pypi_spec):
    archives = fetch(pypi_spec)
    tree, th = snapshot(archives)
    assert read_tree(tree) == {k: v.encode() for k, v in FILES.items()}
    assert th == tree_sha256(tree)
    meta = tree.parent / "snapshot.json"
    stamp = meta.stat().st_mtime_ns
    assert snapshot(archives) == (tree, th)  # a cache hit: nothing unpacked again
    assert meta.stat().st_mtime_ns == stamp
    check_snapshot(tree, th)
    (tree / "minicalc" / "core.py").write_text("edited\n")
    with pytest.raises(SnapshotError, match="hashes to .* the manifest records"):
        check_snapshot(tree, th)


def test_an_archive_member_escaping_the_tree_is_refused(tmp_path):
    bad = make_tarball(
        tmp_path / "bad-1.0.tar.gz", "bad-1.0", {"ok.py": ""}, extra={"../evil.py": "x"}
    )
    with tarfile.open(bad) as tf:
        assert "../evil.py" in tf.getnames()
    with pytest.raises(SnapshotError, match="escapes the tree"):
        snapshot([bad])


def test_debian_sources_default_to_the_public_pool_layout(tmp_path, monkeypatch):
    from jaxrepair.corpus import sources

    from .conftest import fake_debian

    archive = tmp_path / "debian"
    monkeypatch.setattr(sources, "DEBIAN_URL", archive.as_uri())
    assert sources.debian_pool("libfoo").endswith("/pool/main/libf/libfoo")
    dsc = fake_debian(archive / "pool/main/h/hello", "hello", "1:1.0-1", {"hello.c": "int x;\n"})
    spec = pin("debian", "hello", "1:1.0-1")  # the epoch is not part of the file name
    assert (spec.index, spec.filename) == ("", dsc.name)
    assert spec.hash == "sha256:" + hashlib.sha256(dsc.read_bytes()).hexdigest()
    tree, _ = snapshot(fetch(spec))
    assert (tree / "hello.c").read_text() == "int x;\n"
    # another pool (a mirror) is named by the .dsc URL, and kept as the index
    mirror = tmp_path / "mirror"
    shutil.copytree(dsc.parent, mirror)
    other = pin("debian", "hello", "1:1.0-1", dsc_url=(mirror / dsc.name).as_uri())
    assert other.index == mirror.as_uri() and other.hash == spec.hash
