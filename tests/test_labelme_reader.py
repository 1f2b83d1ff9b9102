"""MCIs are read from labelme files of any name; the cell and the true karyotype come from the
file's flags when given."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyoflow.data.bioimlab import DataError, list_mcis, mci_case, read_mci
from karyoflow.joint_eval import true_karyotype

pytestmark = pytest.mark.unit

SQUARE = [[10.0, 10.0], [30.0, 10.0], [30.0, 40.0], [10.0, 40.0]]


def _png_bytes(value: int = 200) -> bytes:
    image = np.zeros((60, 80), np.uint8)
    image[10:40, 10:30] = value
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _labelme(flags: dict | None = None, embedded: bool = True, image_path: str = "cell.png") -> dict:
    return {
        "version": "5.2.1",
        "flags": flags or {},
        "shapes": [{"label": "21", "points": SQUARE, "shape_type": "polygon"}],
        "imagePath": image_path,
        "imageData": base64.b64encode(_png_bytes()).decode("ascii") if embedded else None,
    }


def test_any_file_name_is_read_and_the_case_comes_from_flags_then_name_then_stem(tmp_path: Path) -> None:
    (tmp_path / "lab cell 12 slide B.json").write_text(json.dumps(_labelme({"case": "P-0042"})))
    (tmp_path / "original_57c.json").write_text(json.dumps(_labelme()))
    (tmp_path / "metaphase-03.json").write_text(json.dumps(_labelme()))
    (tmp_path / "notes.txt").write_text("not an MCI")
    paths = list_mcis(tmp_path)
    assert sorted(p.name for p in paths) == ["lab cell 12 slide B.json", "metaphase-03.json", "original_57c.json"]
    by_name = {p.name: read_mci(p) for p in paths}
    assert by_name["lab cell 12 slide B.json"].case == "P-0042"
    assert (by_name["original_57c.json"].case, by_name["original_57c.json"].picture) == ("57", "c")
    assert by_name["metaphase-03.json"].case == "metaphase-03"
    assert mci_case(tmp_path / "lab cell 12 slide B.json") == "P-0042"
    mci = by_name["metaphase-03.json"]
    assert mci.image.shape == (60, 80) and mci.image[20, 20] == 200
    assert mci.labels == ["21"] and mci.polygons[0].shape == (4, 2)


def test_the_folder_and_its_mci_subfolder_are_both_read(tmp_path: Path) -> None:
    (tmp_path / "mci").mkdir()
    (tmp_path / "mci" / "a.json").write_text(json.dumps(_labelme()))
    (tmp_path / "b.json").write_text(json.dumps(_labelme()))
    assert sorted(p.name for p in list_mcis(tmp_path)) == ["a.json", "b.json"]
    assert list_mcis(tmp_path / "mci") == [tmp_path / "mci" / "a.json"]


def test_real_bioimlab_names_keep_their_case(labelled_dir: Path) -> None:
    paths = list_mcis(labelled_dir)
    assert len(paths) == 10
    assert [p.name for p in paths[:3]] == ["original_1.json", "original_2.json", "original_3.json"]
    mci = read_mci(labelled_dir / "mci" / "original_107b.json")
    assert (mci.case, mci.picture, mci.karyotype) == ("107", "b", None)


def test_image_beside_the_file_when_not_embedded(tmp_path: Path) -> None:
    (tmp_path / "cell.png").write_bytes(_png_bytes(150))
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(_labelme(embedded=False)))
    assert read_mci(path).image[20, 20] == 150
    path.write_text(json.dumps(_labelme(embedded=False, image_path="missing.png")))
    with pytest.raises(DataError, match="imagePath .*missing.png"):
        read_mci(path)


def test_json_that_is_not_labelme_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(DataError, match="JSON but not a labelme file"):
        read_mci(path)
    path.write_text("[1, 2")
    with pytest.raises(DataError, match="is not JSON"):
        read_mci(path)
    path.write_text(json.dumps(_labelme({"karyotype": 47})))
    with pytest.raises(DataError, match="flags.karyotype must be an ISCN string"):
        read_mci(path)


def test_true_karyotype_comes_from_flags_first(tmp_path: Path, labelled_dir: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_labelme({"case": "1", "karyotype": "47, XX, +21"})))
    # case 1 has ICIs in the labelled folder (46,XX): the file's own truth wins, normalised
    assert true_karyotype(labelled_dir, read_mci(path)) == "47,XX,+21"
    path.write_text(json.dumps(_labelme({"case": "1"})))
    assert true_karyotype(labelled_dir, read_mci(path)) == "46,XX"
    path.write_text(json.dumps(_labelme({"karyotype": "46,XX,t(9;22)"})))
    with pytest.raises(DataError, match="flags.karyotype"):
        true_karyotype(tmp_path, read_mci(path))


def test_extra_training_folders_are_checked_for_validation_cells_whatever_the_names(tmp_path: Path) -> None:
    from karyoflow.data.split import validation_cells_among

    (tmp_path / "synthetic metaphase 1.json").write_text(json.dumps(_labelme({"case": "107"})))
    (tmp_path / "original_12b.json").write_text(json.dumps(_labelme()))
    assert validation_cells_among(tmp_path, {"107", "5"}) == ["107"]
    assert validation_cells_among(tmp_path, {"12"}) == ["12"]
    with pytest.raises(DataError, match="no MCIs"):
        validation_cells_among(tmp_path / "empty", {"1"})
