"""Every long step shows a progress bar with its ETA, also when the output is captured (a log
file, a busy machine): each script run once, its captured stderr holding a tqdm bar."""
import re

import pandas as pd
import pytest

from helpers import PTBXL_SLICE, script_result

BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[\d+:\d+<")   # tqdm: "40%|####   | 2/5 [00:01<00:02"


def bars(stderr):
    """The descriptions of the progress bars in captured stderr."""
    return {line.split(":")[0].strip() for line in re.split(r"[\r\n]", stderr) if BAR.search(line)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The scripts, run once each on a small demo cohort: name -> stderr."""
    root = tmp_path_factory.mktemp("progress")
    data, run, found = root / "demo", root / "run", {}

    def run_script(name, script, *args):
        done = script_result(script, *args)
        assert done.returncode == 0, done.stderr
        found[name] = done.stderr

    run_script("demo", "demo_cohort.py", f"--output_dir={data}", "--n_patients=20")
    common = ["--epochs=1", "--bootstrap=20", "--device=cpu", "--report=False"]
    run_script("training", "train_MCL_ResNet_1D_class2.py", f"--data_dir={data}",
               f"--output_dir={run}", *common)
    run_script("training_4", "train_MCL_ResNet_1D_class4.py", f"--data_dir={data}",
               f"--output_dir={root / 'run4'}", *common)
    run_script("evaluation", "evaluate.py", f"--train_dir={run}", f"--data_dir={data}",
               "--bootstrap=20", "--device=cpu", "--report=False")
    run_script("saliency", "Saliency_ana2_sys.py", f"--train_dir={run}",
               f"--output_dir={root / 'saliency'}", "--max_figures=2", "--num_samples=2",
               "--sanity_samples=4", "--deletion_draws=2", "--delineation_leads=II,V2,V5",
               "--patient_bootstrap=20", "--figure_workers=1", "--device=cpu", "--report=False")
    run_script("baseline", "ecg_features_baseline.py", f"--train_dir={run}",
               "--delineation_leads=II,V2,V5", "--bootstrap=20", "--report=False")
    run_script("pretraining", "pretrain.py", f"--data_dir={data}",
               f"--output_dir={root / 'pretrained'}", "--epochs=1", "--batch_size=8",
               "--device=cpu")
    table = pd.read_csv(PTBXL_SLICE / "records.csv")
    table["record"] = [str(PTBXL_SLICE / r) for r in table["record"]]
    table.to_csv(root / "records.csv", index=False)
    done = script_result("prepare_data.py", f"--table={root / 'records.csv'}",
                         f"--output_dir={root / 'prepared'}", "--workers=1")
    found["preparation"] = done.stderr   # 8 records cannot train: it ends with that error
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [
    ("training", {"training", "testing"}), ("training_4", {"training", "testing"}),
    ("evaluation", {"scoring"}), ("saliency", {"SmoothGrad maps", "figures", "wave effects",
                                               "sanity check", "deletion test"}),
    ("baseline", {"ECG measurements"}), ("pretraining", {"epoch 1/1"}),
    ("preparation", {"records"})])
def test_each_long_step_shows_a_bar_in_captured_output(runs, name, expected):
    assert expected <= bars(runs[name]), runs[name][-2000:]


def test_the_bar_pattern_matches_tqdm_and_nothing_else():
    line = "training:  50%|#####     | 1/2 [00:03<00:03,  3.1s/epoch]"
    assert bars(f"note: 50% done\r{line}\n") == {"training"}
