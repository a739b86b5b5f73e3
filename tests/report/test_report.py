"""The HTML run report: artefact reading, page structure, privacy, errors, and a real browser render."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from medcl.errors import MedclInputError
from medcl.report import collect_run, render_report, write_embeddings, write_kernel_batch
from medcl.report.collect import read_probe

SUBJECT_IDS = [f"SUBJ-{k:04d}-x7" for k in range(40)]  # must never reach the page
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------- fake run dirs


def _probe_rows(shift: float) -> list[dict]:
    """Rows exactly as ``medcl.evaluate.metrics.write_probe_result`` writes them."""
    rows = []
    for size, n_train, base in ((5, 9.8, 0.62), (10, 19.6, 0.70), ("all", 31.2, 0.80)):
        for metric, offset in (("roc_auc", 0.0), ("balanced_accuracy", -0.1)):
            mean = base + offset - shift
            rows.append(
                {
                    "probe": "linear",
                    "train_size": size,
                    "n_train": n_train,
                    "metric": metric,
                    "mean": mean,
                    "std": 0.04,
                    "ci_low": mean - 0.08,
                    "ci_high": mean + 0.08,
                    "n_folds": 5,
                    "per_fold": [mean] * 5,
                }
            )
    return rows


def make_run(path: Path, *, method: str = "kernel_du", shift: float = 0.0, n: int = 40) -> Path:
    """A run directory with every artefact the report reads (plus an id file it must ignore)."""
    rng = np.random.default_rng(0)
    (path / "probe").mkdir(parents=True)
    lines = ["step,epoch,train/loss_step,train/lr,train/loss_epoch"]
    for step in range(0, 60, 5):
        lines.append(
            f"{step},{step // 20},{2.5 * np.exp(-step / 30) + shift:.4f},{1e-3 * (1 - step / 120):.6f},"
        )
        if step % 20 == 15:
            lines.append(f"{step},{step // 20},,,{2.4 * np.exp(-step / 30) + shift:.4f}")
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    probe = {
        "label": "diagnosis",
        "kind": "binary",
        "n_subjects": n,
        "n_patients": n // 2,
        "n_folds": 5,
        "metric_names": ["roc_auc", "balanced_accuracy"],
        "rows": _probe_rows(shift),
        "notes": ["1 subject(s) without a label were left out"],
        "info": {"seed": 0},
    }
    (path / "probe" / "diagnosis.json").write_text(json.dumps(probe))
    legacy = {
        "label": "age",
        "kind": "continuous",
        "metrics": {"mae": {"mean": 6.5 + shift, "std": 0.5, "ci_low": 5.9, "ci_high": 7.1}},
    }
    (path / "probe" / "age.json").write_text(json.dumps(legacy))
    diagnosis = rng.integers(0, 2, n)
    features = rng.normal(size=(n, 8)) + diagnosis[:, None]
    age = rng.uniform(20, 80, n)
    age[0] = np.nan
    site = np.array(["north", "south"])[rng.integers(0, 2, n)]
    write_embeddings(path, features, {"diagnosis": diagnosis, "age": age, "site": site})
    attr = rng.uniform(20, 80, 12)
    write_kernel_batch(path, np.exp(-((attr[:, None] - attr[None]) ** 2) / 200.0))
    (path / "attributes.json").write_text(
        json.dumps(
            [
                {"attribute": "age", "cka": 0.41, "p_value": 0.002},
                {"attribute": "site", "cka": 0.07, "p_value": 0.4},
            ]
        )
    )
    config = {"method": method, "seed": 0, "loss": {"t": 2.0, "lam": 0.01}, "subject_ids": SUBJECT_IDS[:3]}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "split.csv").write_text(
        "subject_id,patient_id,split\n" + "".join(f"{s},{s},train\n" for s in SUBJECT_IDS)
    )
    return path


class _Page(HTMLParser):
    """Collects what the tests check: images, tables (as rows of cell texts), sections, all text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.sections: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[list[str]]:
        return next(t for t in self.tables if t and header in t[0])


def parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    return page


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = make_run(tmp_path_factory.mktemp("report") / "run_kdu")
    out = render_report([run], projection="pca")
    return out, out.read_text()


# ------------------------------------------------------------------------------------ single run


def test_single_run_report_has_every_section_with_plots_and_tables(rendered: tuple[Path, str]) -> None:
    out, text = rendered
    assert out.name == "report.html" and out.parent.name == "run_kdu"  # default: inside the run
    page = parse(text)
    assert page.sections == [
        "runs",
        "training",
        "probes",
        "label-efficiency",
        "embeddings",
        "kernel",
        "attributes",
        "config",
    ]
    # training curves, label efficiency, projection, kernel, attribute CKA
    assert len(page.images) == 5
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert not any(t in page.tags for t in ("script", "link", "iframe"))  # self-contained, no JS
    probes = page.table_with("95% CI")
    assert probes[0] == ["label", "kind", "metric", "mean", "std", "95% CI", "details"]
    auc = next(r for r in probes if r[0] == "diagnosis" and r[2] == "roc_auc")
    assert auc[3:6] == ["0.800", "0.040", "[0.720, 0.880]"]
    assert "n_subjects=40" in auc[6] and "n_patients=20" in auc[6]
    assert any(r[:3] == ["age", "continuous", "mae"] and r[5] == "[5.900, 7.100]" for r in probes)
    attributes = page.table_with("cka")
    assert attributes[1] == ["age", "0.410", "0.002"]
    assert page.table_with("artefacts found")[1][:2] == ["run_kdu", "kernel_du"]
    body = "".join(page.text)
    assert "method: kernel_du" in body and "1 subject(s) without a label were left out" in body
    assert 'class="absent"' not in text  # no section reported absent


def test_report_never_shows_subject_ids(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    assert "SUBJ-" not in text
    assert "<3 identifiers redacted>" in "".join(parse(text).text)


def test_redact_ids_replaces_scalar_and_container_ids_and_keeps_the_rest() -> None:
    from medcl.report.collect import redact_ids

    config = {"subject_id": "PATIENTXQZ0001", "patient_ids": ["A", "B"], "id": 7, "mrn": None,
              "n_subjects": 40, "data": {"Patient ID": "MRN-1", "age": 41.5, "runs": [{"case_id": "C9"}]}}
    assert redact_ids(config) == {
        "subject_id": "<identifier redacted>", "patient_ids": "<2 identifiers redacted>",
        "id": "<identifier redacted>", "mrn": None, "n_subjects": 40,
        "data": {"Patient ID": "<identifier redacted>", "age": 41.5, "runs": [{"case_id": "<identifier redacted>"}]},
    }


def test_embeddings_file_with_an_id_column_is_shown_without_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    features = np.random.default_rng(1).normal(size=(12, 4))
    np.savez(
        run / "embeddings.npz",
        features=features,
        subject_id=np.array(SUBJECT_IDS[:12]),
        site=np.array(["a", "b"] * 6),
    )
    artefacts = collect_run(run)
    assert artefacts.embeddings is not None and list(artefacts.embeddings.columns) == ["site"]
    assert any("subject_id" in note for note in artefacts.notes)
    out = render_report([run], tmp_path / "r.html", projection="auto")  # 12 subjects: t-SNE
    text = out.read_text()
    assert "SUBJ-" not in text and "t-SNE of 12 subjects" in text


def test_text_from_run_files_is_escaped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "probe").mkdir(parents=True)
    evil = "<script>alert(1)</script>"
    (run / "probe" / "x.json").write_text(json.dumps({"label": evil, "metrics": {"roc_auc": 0.7}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"method": evil}))
    page = parse(render_report([run], tmp_path / "r.html").read_text())
    assert "script" not in page.tags
    assert evil in "".join(page.text)


# ----------------------------------------------------------------------------------- several runs


def test_several_runs_are_compared_and_overlaid(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a" / "run", method="kernel_du")
    b = make_run(tmp_path / "b" / "run", method="simclr", shift=0.05)
    out = render_report([a, b], tmp_path / "compare.html", title="KDU vs SimCLR", projection="pca")
    text = out.read_text()
    page = parse(text)
    assert page.sections[:2] == ["runs", "comparison"]
    comparison = page.table_with("diagnosis · roc_auc")
    assert [r[:2] for r in comparison[1:]] == [["a/run", "kernel_du"], ["b/run", "simclr"]]  # unique names
    column = comparison[0].index("diagnosis · roc_auc")
    assert comparison[1][column] == "0.800 [0.720, 0.880]"
    assert comparison[2][column] == "0.750 [0.670, 0.830]"
    # best per column: higher AUC for a, lower MAE for a as well
    assert text.count('class="num best"') == 3
    # overlaid: one training and one label-efficiency figure for both runs, the rest per run
    assert len(page.images) == 1 + 1 + 2 * 3
    assert "<title>KDU vs SimCLR</title>" in text


# --------------------------------------------------------------------------- absent and damaged


def test_missing_artefacts_are_noted_not_fatal(tmp_path: Path) -> None:
    run = tmp_path / "only_config"
    run.mkdir()
    (run / "config.yaml").write_text("method: du\n")
    page = parse(render_report([run], tmp_path / "r.html").read_text())
    body = "".join(page.text)
    assert page.images == []
    for missing in (
        "No metrics.csv",
        "No probe/*.json",
        "No label-efficiency",
        "No embeddings.npz",
        "No kernel_batch.npy",
        "No attributes.json",
    ):
        assert missing in body
    assert "method: du" in body


def test_damaged_files_are_reported_and_the_rest_still_renders(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "probe" / "age.json").write_text("{not json")
    (run / "attributes.json").write_text(json.dumps({"unexpected": 1}))
    artefacts = collect_run(run)
    assert [p.label for p in artefacts.probes] == ["diagnosis"]
    assert any(n.startswith("probe/age.json: unreadable") for n in artefacts.notes)
    assert any(n.startswith("attributes.json: unreadable") for n in artefacts.notes)
    body = "".join(parse(render_report([run], tmp_path / "r.html", projection="pca").read_text()).text)
    assert "probe/age.json: unreadable" in body and "diagnosis" in body


def test_missing_or_empty_run_dir_is_an_input_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(MedclInputError, match="nowhere"):
        render_report([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("")
    with pytest.raises(MedclInputError, match=r"empty.*holds nothing the report can read"):
        render_report([tmp_path / "empty"])
    assert not (tmp_path / "empty" / "report.html").exists()
    with pytest.raises(MedclInputError, match="is a directory"):
        render_report([make_run(tmp_path / "run")], tmp_path)


def test_cli_writes_the_report_and_exits_2_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from medcl.cli import main

    run = make_run(tmp_path / "run")
    out = tmp_path / "out" / "page.html"
    assert main(["report", str(run), "--out", str(out), "--projection", "pca"]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing_run")]) == 2
    assert "missing_run" in capsys.readouterr().err
    assert main(["report", str(run), "--projection", "umap"]) == 2
    assert "--projection" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- writers


def test_write_embeddings_round_trips_and_validates(tmp_path: Path) -> None:
    features = np.arange(12, dtype=float).reshape(4, 3)
    write_embeddings(tmp_path, features, {"age": [30.0, 40.0, np.nan, 50.0], "site": ["a", "b", "a", None]})
    emb = collect_run(tmp_path).embeddings
    assert emb is not None
    np.testing.assert_allclose(emb.features, features)
    assert emb.columns["site"].tolist() == ["a", "b", "a", ""]
    with pytest.raises(MedclInputError, match="patient_id"):
        write_embeddings(tmp_path, features, {"patient_id": ["p1", "p2", "p3", "p4"]})
    with pytest.raises(MedclInputError, match=r"'age'.*\(3,\)"):
        write_embeddings(tmp_path, features, {"age": [1.0, 2.0, 3.0]})
    with pytest.raises(MedclInputError, match=r"\(n, F\)"):
        write_embeddings(tmp_path, features[0])


def test_write_kernel_batch_round_trips_and_validates(tmp_path: Path) -> None:
    kernel = np.eye(3) * 0.5 + 0.5
    write_kernel_batch(tmp_path, kernel)
    np.testing.assert_allclose(collect_run(tmp_path).kernel_batch, kernel)
    with pytest.raises(MedclInputError, match=r"square.*\(2, 3\)"):
        write_kernel_batch(tmp_path, np.zeros((2, 3)))


def test_reads_the_probe_module_output(tmp_path: Path) -> None:
    probe = pytest.importorskip("medcl.evaluate.metrics")
    rows = _probe_rows(0.0)
    result = probe.ProbeResult(
        kind="binary",
        n_subjects=40,
        n_patients=20,
        n_folds=5,
        metric_names=["roc_auc", "balanced_accuracy"],
        rows=rows,
        notes=["a note"],
    )
    path, _ = probe.write_probe_result(result, tmp_path, "diagnosis")
    (parsed,) = read_probe(path)
    assert parsed.label == "diagnosis" and parsed.kind == "binary" and parsed.notes == ["a note"]
    assert parsed.metrics["roc_auc"].mean == pytest.approx(0.8)
    assert parsed.metrics["roc_auc"].ci_low == pytest.approx(0.72)
    assert [p.train_size for p in parsed.label_efficiency] == [9.8, 19.6, 31.2]
    assert parsed.details["n_patients"] == 20


# ------------------------------------------------------------------------------ headless browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable; skipped (with the reason shown by ``pytest -rs``) when missing.

    The suite never installs anything: ``make test`` installs Debian's chromium beforehand when
    it can (root and apt-get), see the Makefile's ``browser`` target.
    """
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed: the report is not rendered in a browser "
                    "(`make browser` or `apt-get install -y chromium` installs it)")
    return exe


def _chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(300)
def test_report_renders_in_headless_chromium(
    chromium: str, rendered: tuple[Path, str], tmp_path: Path
) -> None:
    from PIL import Image

    out, _ = rendered
    shot = tmp_path / "report.png"
    done = _chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        out.resolve().as_uri(),
    )
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        pixels = np.asarray(image.convert("RGB"))
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 100  # text, plots, colours: not a blank page
    non_white = (pixels < 245).any(axis=2).mean()
    assert 0.03 < non_white < 0.9

    dom = _chromium(chromium, tmp_path / "profile", "--dump-dom", out.resolve().as_uri())
    page = parse(dom.stdout)
    assert len(page.images) == 5 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.table_with("95% CI") and page.table_with("cka")
    assert "SUBJ-" not in dom.stdout
