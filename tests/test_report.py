"""report.html: one self-contained page per output folder, with the numbers of the folder's JSON
files, every figure embedded and a TRIPOD+AI table; opened in a real headless Chromium in the
slow tier."""
import json
import os
import re

import pytest

from browser import chromium_path, opened_page
from helpers import ROOT, evaluation_config, quiet, script_result, tiny_config
from lvr.train import run as engine
from lvr.evaluate.external import run_evaluation
from lvr.report.html import FIGURES, REPORT_FILE, report_context, write_report
from lvr.report.tripod import FOR_AUTHORS, ITEMS

EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["']?(?!data:|#)[a-z]+://""", re.I)


@pytest.fixture(scope="module")
def run_dir(small_cohort_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("report") / "run"
    engine.run_training(tiny_config(small_cohort_dir, output_dir, EPOCHS=2, BOOTSTRAP=30),
                        log=quiet)
    return output_dir


def page_of(folder):
    return (folder / REPORT_FILE).read_text(encoding="utf-8")


def assert_self_contained(page, folder):
    assert "<script" not in page.lower()
    assert not EXTERNAL_URL.search(page), EXTERNAL_URL.search(page).group(0)
    pngs = [n for n in os.listdir(folder) if n.endswith(".png")]
    assert page.count('src="data:image/png;base64,') == len(pngs) > 0


def test_a_training_run_writes_a_self_contained_report(run_dir):
    page = page_of(run_dir)
    assert_self_contained(page, run_dir)
    for section in ("cohort", "training", "discrimination", "operating_point", "calibration",
                    "decision_curve", "subgroups", "provenance", "tripod"):
        assert f'id="{section}"' in page, section
    results = json.loads((run_dir / "test_eval_results.json").read_text())
    auc = results["patient_level"]["roc_auc"]
    low, high = results["patient_level"]["roc_auc_ci95"]
    assert f"{auc:.3f} [{low:.3f}, {high:.3f}]" in page
    assert f"Threshold <strong>{results['operating_point']['threshold']:.4f}</strong>" in page
    assert "before the test set was scored (" in page and \
        "). A patient\nis called positive" in page
    run = json.loads((run_dir / "run.json").read_text())
    assert run["data_fingerprint"] in page


def test_the_headline_comes_first_and_names_the_operating_point(run_dir):
    context = report_context(str(run_dir))
    labels = [label for label, _ in context["headline"]]
    assert labels[:2] == ["Patients tested", "Patient-level AUC [95% CI]"]
    assert any("chosen on validation" in label for label in labels)
    page = page_of(run_dir)
    assert page.index('class="headline"') < page.index('id="cohort"')


def test_the_tripod_table_lists_every_item_and_says_what_the_run_filled(run_dir):
    rows = report_context(str(run_dir))["tripod"]
    assert [row["item"] for row in rows] == [item for item, _ in ITEMS]
    filled = {row["item"]: row for row in rows}
    for item in ("12a", "12e", "15", "20a", "20b", "21", "23a"):
        assert filled[item]["filled"] != FOR_AUTHORS, item
        assert filled[item]["where"], item
    for item in ("17", "18a", "19", "25", "26"):
        assert filled[item]["filled"] == FOR_AUTHORS
    assert "youden" in filled["15"]["filled"]


def test_every_known_figure_has_a_section(run_dir):
    sections = {section for section, _ in FIGURES.values()}
    page = page_of(run_dir)
    for name in os.listdir(run_dir):
        if name in FIGURES:
            assert f'alt="{name}"' in page
    assert sections <= {"cohort", "training", "discrimination", "operating_point",
                        "calibration", "decision_curve", "explanations"}


def test_report_false_writes_none(small_cohort_dir, tmp_path):
    engine.run_training(tiny_config(small_cohort_dir, tmp_path / "run", EPOCHS=1, BOOTSTRAP=10,
                                    REPORT=False), log=quiet)
    assert (tmp_path / "run" / "test_eval_results.json").exists()
    assert not (tmp_path / "run" / REPORT_FILE).exists()


def test_plot_training_curves_redraws_the_report(run_dir, tmp_path):
    (run_dir / REPORT_FILE).unlink()
    done = script_result("plot_training_curves.py", f"--train_dir={run_dir}")
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout
    assert_self_contained(page_of(run_dir), run_dir)
    done = script_result("plot_training_curves.py", f"--train_dir={tmp_path}")
    assert done.returncode == 2 and "--train_dir must be the folder of a finished run" in \
        done.stderr


def test_an_evaluation_report_says_what_was_evaluated(run_dir, small_cohort_dir, tmp_path):
    out = tmp_path / "evaluated"
    run_evaluation(evaluation_config(run_dir, small_cohort_dir, BOOTSTRAP=20,
                                     OUTPUT_DIR=str(out)), log=quiet)
    page = page_of(out)
    assert_self_contained(page, out)
    assert "External evaluation of" in page and "not</strong> an external validation" in page
    assert report_context(str(out))["kind"] == "external evaluation"


def test_a_folder_without_results_still_gets_a_page(tmp_path):
    (tmp_path / "saliency_run.json").write_text(json.dumps({"config": {}, "test_beats": 3}))
    write_report(str(tmp_path), log=quiet)
    assert "Saliency analysis" in page_of(tmp_path)


# ------------------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo's 2-class run (short), its saliency analysis and an external evaluation."""
    root = tmp_path_factory.mktemp("demo_reports")
    data, other = root / "demo", root / "other"
    assert script_result("demo_cohort.py", f"--output_dir={data}", "--n_patients=30").returncode \
        == 0
    assert script_result("demo_cohort.py", f"--output_dir={other}", "--n_patients=30",
                         "--seed=7").returncode == 0
    run = root / "run"
    done = script_result("train_MCL_ResNet_1D_class2.py", f"--data_dir={data}",
                         f"--output_dir={run}", "--epochs=2", "--bootstrap=100", "--device=cpu")
    assert done.returncode == 0, done.stderr
    done = script_result("Saliency_ana2_sys.py", f"--data_dir={data}", f"--train_dir={run}",
                         f"--output_dir={root / 'saliency'}", "--max_figures=1",
                         "--num_samples=3", "--delineation_leads=II,V2,V5",
                         "--patient_bootstrap=100", "--device=cpu")
    assert done.returncode == 0, done.stderr
    done = script_result("evaluate.py", f"--train_dir={run}",
                         f"--data_dir={other}", "--bootstrap=100", "--device=cpu",
                         "--allow_patient_overlap=True")
    assert done.returncode == 0, done.stderr
    return {"training": run, "saliency": root / "saliency", "evaluation": run / "external_other"}


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no chromium here (.ci/run installs "
                                                    "Debian's chromium package)")
@pytest.mark.parametrize("kind", ["training", "saliency", "evaluation"])
def test_the_report_opens_in_a_browser_without_errors_or_network(demo_runs, kind, tmp_path):
    folder = demo_runs[kind]
    opened = opened_page(folder / REPORT_FILE)
    outside = [url for url in opened["requests"] if not url.startswith(("file:", "data:"))]
    assert outside == []
    assert opened["errors"] == []
    assert opened["images"] == opened["images_loaded"] == len(
        [n for n in os.listdir(folder) if n.endswith(".png")]) > 0
    assert opened["title"].startswith({"training": "Training report",
                                       "saliency": "Saliency analysis",
                                       "evaluation": "External evaluation"}[kind])
    assert opened["screenshot"][:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / f"{kind}.png").write_bytes(opened["screenshot"])


def test_the_docs_screenshot_is_of_a_report():
    path = os.path.join(ROOT, "docs", "report_first_screen.png")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
