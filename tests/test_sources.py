"""Where images come from: folder discovery that never hangs or escapes, and metadata CSVs (C2)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from imgmatch.errors import MetadataError
from imgmatch.sources import (
    ReferenceMetadata,
    discover_images,
    find_metadata_files,
    read_metadata,
)


@pytest.fixture
def listings(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> Path:
    """A folder tree as a seller's upload might leave it."""
    root = tmp_path / "listings"
    photo = make_photo(11)
    write_image(root / "b_base.jpg", photo)
    write_image(root / "a_base.png", photo)
    write_image(root / "shop" / "z_base_mirrored.JPG", photo[:, ::-1].copy(), format="JPEG")
    write_image(root / "shop" / "deeper" / "c_base.webp", photo)
    write_image(root / ".thumbnails" / "hidden_base.jpg", photo)
    write_image(root / "shop" / ".hidden_base.jpg", photo)
    (root / "notes.txt").write_text("not an image")
    (root / "shop" / "listing.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_discovery_is_recursive_sorted_and_skips_hidden(listings: Path) -> None:
    found = discover_images([listings])
    relative = [p.relative_to(listings).as_posix() for p in found.files]
    assert relative == [
        "a_base.png",
        "b_base.jpg",
        "empty.jpg",
        "shop/deeper/c_base.webp",
        "shop/z_base_mirrored.JPG",
    ]
    assert found.unsupported == 2
    assert found.skipped == []


def test_zero_byte_file_is_listed_for_the_decoder_to_report(listings: Path) -> None:
    assert listings / "empty.jpg" in discover_images([listings]).files


def test_explicit_files_are_taken_whatever_their_suffix(listings: Path) -> None:
    found = discover_images([listings / "notes.txt", listings / "b_base.jpg"])
    assert found.files == [listings / "notes.txt", listings / "b_base.jpg"]


def test_missing_path_is_skipped_with_a_reason(tmp_path: Path) -> None:
    found = discover_images([tmp_path / "nowhere"])
    assert found.files == []
    assert [s.reason for s in found.skipped] == ["no such file or folder"]


def test_same_file_given_twice_is_listed_once(listings: Path) -> None:
    found = discover_images([listings / "b_base.jpg", listings])
    assert found.files.count(listings / "b_base.jpg") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_fifo_is_skipped_not_opened(listings: Path) -> None:
    # Opening a FIFO with no writer blocks forever; discovery must only stat it.
    fifo = listings / "pipe.jpg"
    os.mkfifo(fifo)
    found = discover_images([listings])
    assert fifo not in found.files
    assert [(s.path, s.reason) for s in found.skipped] == [
        (fifo, "not a regular file (FIFO, device or socket)")
    ]


def test_symlink_loop_is_skipped(listings: Path) -> None:
    (listings / "loop_a.jpg").symlink_to(listings / "loop_b.jpg")
    (listings / "loop_b.jpg").symlink_to(listings / "loop_a.jpg")
    found = discover_images([listings])
    reasons = {s.path.name: s.reason for s in found.skipped}
    assert reasons == {
        "loop_a.jpg": "broken or looping symlink",
        "loop_b.jpg": "broken or looping symlink",
    }
    assert len(found.files) == 5


def test_folder_symlinked_into_itself_is_not_followed(listings: Path) -> None:
    (listings / "shop" / "again").symlink_to(listings, target_is_directory=True)
    found = discover_images([listings])
    assert len(found.files) == 5
    assert [s.reason for s in found.skipped] == ["symlink to a folder (not followed)"]


def test_symlink_out_of_the_root_is_skipped(
    tmp_path: Path,
    listings: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:
    secret = write_image(tmp_path / "elsewhere" / "private.jpg", make_photo(12))
    (listings / "shop" / "leak.jpg").symlink_to(secret)
    found = discover_images([listings])
    assert secret not in found.files
    assert all(p.name != "leak.jpg" for p in found.files)
    assert [(s.path.name, s.reason) for s in found.skipped] == [
        ("leak.jpg", "symlink leads outside the folder")
    ]


def test_symlink_inside_the_root_is_followed_once(listings: Path) -> None:
    (listings / "shop" / "alias.jpg").symlink_to(listings / "b_base.jpg")
    found = discover_images([listings])
    assert found.skipped == []
    # One file, reached twice: listed under the name seen first.
    assert len(found.files) == 5


# --- metadata CSVs (C2) ---------------------------------------------------------------------------


def test_read_metadata_resolves_paths_against_the_csv_folder(tmp_path: Path) -> None:
    folder = tmp_path / "refs"
    folder.mkdir()
    csv_path = folder / "metadata.csv"
    csv_path.write_text(
        "path,design,brand,metal,notes\n"
        "D001_0.jpg,D001,Atelier Exemple,yellow_gold,\n"
        "sub/D002_0.jpg,D002,,white_gold,clover\n",
        encoding="utf-8",
    )
    table = read_metadata(csv_path)
    assert table == {
        (folder / "D001_0.jpg").resolve(): ReferenceMetadata(
            "D001", "Atelier Exemple", {"metal": "yellow_gold"}
        ),
        (folder / "sub" / "D002_0.jpg").resolve(): ReferenceMetadata(
            "D002", "", {"metal": "white_gold", "notes": "clover"}
        ),
    }


def test_read_metadata_accepts_a_bom_and_padded_headers(tmp_path: Path) -> None:
    csv_path = tmp_path / "metadata.csv"
    csv_path.write_text("\ufeffpath , design, brand\nx.jpg, D9 ,B\n", encoding="utf-8")
    assert read_metadata(csv_path) == {
        (tmp_path / "x.jpg").resolve(): ReferenceMetadata("D9", "B", {})
    }


@pytest.mark.parametrize(
    "header", ["path,brand", "design,brand", "path,design", "file,design,brand", ""]
)
def test_read_metadata_missing_required_column_raises(tmp_path: Path, header: str) -> None:
    csv_path = tmp_path / "metadata.csv"
    csv_path.write_text(f"{header}\n", encoding="utf-8")
    with pytest.raises(MetadataError, match="missing column"):
        read_metadata(csv_path)


def test_read_metadata_empty_design_raises_with_the_line(tmp_path: Path) -> None:
    csv_path = tmp_path / "metadata.csv"
    csv_path.write_text("path,design,brand\na.jpg,D1,B\nb.jpg,,B\n", encoding="utf-8")
    with pytest.raises(MetadataError, match=r"metadata\.csv:3:"):
        read_metadata(csv_path)


def test_read_metadata_unreadable_file_raises_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError):
        read_metadata(tmp_path / "absent.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("path,design,brand\nbijou.jpg,D1,Cr\xe9ation\n".encode("latin-1"))
    with pytest.raises(MetadataError):
        read_metadata(latin1)


def test_bundled_metadata_describes_every_bundled_image(bundled_references: Path) -> None:
    table = read_metadata(bundled_references / "metadata.csv")
    images = discover_images([bundled_references]).files
    assert len(images) == 32
    assert set(table) == {p.resolve() for p in images}
    assert all(meta.design.startswith("D") for meta in table.values())
    assert find_metadata_files([bundled_references]) == [bundled_references / "metadata.csv"]
