"""Every constant of every script is checked at start: a bad value is one clear error line."""
import ast
import os
import runpy
import subprocess
import sys

import pytest

from helpers import HANG_LIMIT_S

from lvr import options as valid
from lvr.config import RELATIONS, UserError, config_names, configure
from lvr.leads import LEAD_BY_KEY, lead_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train_MCL_ResNet_1D_class2.py", "train_MCL_ResNet_1D_class4.py",
           "Saliency_ana2_sys.py", "prepare_data.py", "demo_cohort.py", "plot_training_curves.py",
           "compare_runs.py", "ecg_features_baseline.py", "pretrain.py", "evaluate.py")
A_FILE = os.path.abspath(__file__)      # exists as a regular file: no folder may be named so
A_FOLDER = os.path.dirname(A_FILE)

# One invalid value per option name, as the script would hold it after --name=value
BAD = {
    "DATA_DIR": A_FILE, "TRAIN_DIR": A_FILE, "OUTPUT_DIR": A_FILE, "CHECKPOINT": " ",
    "ALLOW_PICKLE": "yes", "SEED": -1, "BATCH_SIZE": 0, "DEVICE": "gpu", "TASK": "regression",
    "NUM_CLASSES": 1, "CLASS_NAMES": ("a", ""), "EXPERIMENT": "resnet50", "DROPOUT": 1.0,
    "LEAD_DROPOUT": -0.1, "EPOCHS": 0, "LR": -0.1, "WEIGHT_DECAY": -1e-3,
    "LABEL_SMOOTHING": 1.5, "GRAD_CLIP": 0.0, "LR_FACTOR": 1.0, "LR_PATIENCE": -1,
    "TEST_SIZE": 1.0, "VAL_SIZE": 0.0, "CV_FOLDS": 1, "BOOTSTRAP": -5, "NUM_WORKERS": -1,
    "RESUME": 1, "NUM_SAMPLES": 0, "NOISE_LEVEL": -1.0, "MAX_FIGURES": -3, "FIG_DPI": 0,
    "FIGURE_WORKERS": 0, "WAVE_IMPORTANCE": None, "DELINEATION_LEADS": "II,V7",
    "SANITY_CHECK": "no", "SANITY_SAMPLES": 0, "DELETION_TEST": 0, "DELETION_MAX_K": 13,
    "DELETION_DRAWS": 0, "METHOD": "lime", "IG_STEPS": 0, "OCCLUSION_WINDOW_MS": 0,
    "PATIENT_BOOTSTRAP": -1, "WAVE_EFFECTS": "maybe", "WAVE_REFERENCE": "mode",
    "WAVE_ALIGNMENT": "t_peak", "WAVE_BLEND_MS": -5, "LEAD_IMPORTANCE": "both", "SAVE_MAPS": 2,
    "TABLE": A_FOLDER, "PTBXL_DIR": A_FILE, "NAME": 5, "OVERWRITE": "y",
    "FS": 0, "PRE": -0.1, "POST": 0.0, "BEATS": "first:0", "BANDPASS": (40.0, 0.5),
    "BANDPASS_ORDER": 0, "NOTCH_HZ": (50.0, -60.0), "DETECTOR": "", "DETECTOR_LEAD": "V7",
    "R_REFINE_S": -0.01, "MIN_PEAK_RATIO": 1.5, "HEART_RATE_BPM": (220.0, 30.0),
    "REJECT_FLAT_MV": -0.05, "REJECT_SATURATION": 0.0, "REJECT_NOISE": 0.0, "WORKERS": 0,
    "MIN_LIKELIHOOD": 101.0, "PTBXL_DEVICE": 6, "UNIT": "mmHg", "PLAUSIBLE_MV": (20.0, 0.1),
    "N_PATIENTS": 0, "BEATS_PER_PATIENT": (7, 2), "LVR_LEADS": ("V2", "V7"), "LVR_WAVE": "P",
    "LVR_STRENGTH": (2.2, 0.8), "NON_LVR_CHANGE": (1.3, 0.0, 0.6), "DISCORDANT_SHARE": 1.5,
    "WINDOW_S": 0.0, "R_PEAK_S": -0.3, "NOISE_MV": -0.02, "WANDER_MV": -0.08,
    "AMPLITUDE_SCALE": 0, "EXTERNAL": "maybe", "LEVEL": "record",
    "ALPHA": 1.5, "RUN_A": 3, "RUN_B": 3, "POSITIVE_CLASS": 1, "OUTPUT": 2,
    "ALLOW_OTHER_COHORT": "yes", "NORMALISATION": "zscore", "SELECT_BY": "val_f1",
    "PENALTY_FOLDS": 1, "PENALTIES": 0, "MEASUREMENTS": 5, "THRESHOLD": "sensitivity:1.5",
    "REPORT": "sometimes", "ALLOW_PATIENT_OVERLAP": "yes", "INIT_FROM": A_FOLDER,
    "FREEZE_EPOCHS": -1, "ENCODER_LR_FACTOR": 0.0, "ALLOW_PRETRAINING_OVERLAP": "yes",
    "EXCLUDE_PATIENTS": A_FOLDER, "PAIRS": "segments", "TEMPERATURE": 0.0, "PROJECTION_DIM": 0,
    "AMPLITUDE_RANGE": (1.2, 0.8), "WANDER": -0.1, "NOISE": -0.05, "SHIFT_MS": -20.0,
    "LEAD_MASK": 1.0,
}

# Valid values other than the defaults, given as on the command line
VALID = [
    ("train_MCL_ResNet_1D_class2.py", arg) for arg in [
        "--device=cuda:1", "--device=cuda", "--device=cpu", "--class_names=()",
        "--class_names=Normal,Abnormal", "--class_names=0,1", "--test_size=0.3", "--cv_folds=5",
        "--bootstrap=0", "--lead_dropout=0", "--experiment=baseline", "--label_smoothing=0",
        "--seed=0", "--weight_decay=0", "--output_dir=" + A_FOLDER,
        "--normalisation=per_beat", "--normalisation=none", "--select_by=val_auc",
        "--select_by=val_loss", "--threshold=youden", "--threshold=sensitivity:0.9",
        "--threshold=specificity:.95", "--threshold=0.3", "--threshold=argmax", "--report=False",
        "--init_from=results_ptbxl/best_model.pth"]
] + [
    ("Saliency_ana2_sys.py", arg) for arg in [
        "--max_figures=None", "--max_figures=0", "--noise_level=0", "--num_samples=1",
        "--delineation_leads=II,V2,V5", "--delineation_leads=ALL", "--figure_workers=1",
        "--checkpoint=last_checkpoint.pth", "--deletion_max_k=12", "--device=cuda:0"]
] + [
    ("prepare_data.py", arg) for arg in [
        "--task=binary:CONTROL,LVR", "--task=multiclass:A,B,C", "--task=superclass4",
        "--table=records.csv", "--ptbxl_dir=" + A_FOLDER, "--beats=median", "--beats=first:8",
        "--beats=random:3", "--notch_hz=", "--notch_hz=50", "--detector_lead=lead ii",
        "--detector=pantompkins1985", "--output_dir=data/mine", "--name=mine", "--pre=0.25",
        "--workers=1", "--min_peak_ratio=0", "--reject_flat_mv=0", "--unit=uV", "--unit=v",
        "--min_likelihood=50", "--ptbxl_device=AT-6", "--plausible_mv=0.05,30"]
] + [
    ("demo_cohort.py", arg) for arg in [
        "--output_dir=data/other", "--lvr_leads=I,aVL,V6", "--lvr_leads=V1", "--seed=7",
        "--lvr_wave=QRS", "--lvr_wave=Q", "--lvr_wave=ST_DEPRESSION", "--lvr_wave=ST_ELEVATION",
        "--beats_per_patient=3,3", "--non_lvr_change=0,0,0",
        "--lvr_strength=-1,1", "--discordant_share=0", "--noise_mv=0", "--r_peak_s=0.25"]
] + [("train_MCL_ResNet_1D_class4.py", "--class_names=a,b,c,d"),
     ("plot_training_curves.py", "--train_dir=results_class4")]


def script_namespace(script):
    """The script's module namespace at its defaults (executed fresh, not as __main__)."""
    return runpy.run_path(os.path.join(ROOT, script), run_name="options_test")


@pytest.fixture(scope="module")
def namespaces():
    return {script: script_namespace(script) for script in SCRIPTS}


def script_constants(namespaces):
    return [(script, name) for script in SCRIPTS for name in config_names(namespaces[script])]


ALL_CONSTANTS = script_constants({script: script_namespace(script) for script in SCRIPTS})


def assigned_constants(script):
    """UPPER_CASE names the script assigns at its top level (annotated or not)."""
    tree = ast.parse(open(os.path.join(ROOT, script), encoding="utf-8").read())
    return [node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
            for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            and isinstance(getattr(node, "target", None) or node.targets[0], ast.Name)
            and (getattr(node, "target", None) or node.targets[0]).id.isupper()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_constant_is_an_option_with_a_rule(script, namespaces):
    """A constant without its rule annotation could not be overridden: each has one."""
    assert assigned_constants(script) == config_names(namespaces[script])


def test_every_relation_names_options_of_one_script(namespaces):
    options = [set(config_names(namespaces[script])) for script in SCRIPTS]
    assert all(any(set(names) <= names_of for names_of in options) for names, _, _ in RELATIONS)


def test_the_training_scripts_differ_only_in_their_values():
    def lines(script):
        return [line.split("=", 1)[0] if ":" in line.split("=", 1)[0] else line
                for line in open(os.path.join(ROOT, script), encoding="utf-8")
                if not line.startswith(("#", '"""')) and line[:1].isupper()]
    assert lines("train_MCL_ResNet_1D_class2.py") == lines("train_MCL_ResNet_1D_class4.py")


def test_imported_constants_are_not_options(namespaces):
    assert "HISTORY_KEYS" in namespaces["plot_training_curves.py"]
    assert config_names(namespaces["plot_training_curves.py"]) == ["TRAIN_DIR", "REPORT"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_defaults_pass_the_checks(script, namespaces):
    namespace = dict(namespaces[script])
    resolved = configure(namespace, [])
    assert resolved == {name: namespaces[script][name] for name in config_names(namespace)}


@pytest.mark.parametrize("script, arg", VALID)
def test_valid_values_are_accepted(script, arg, namespaces):
    configure(dict(namespaces[script]), [arg])


@pytest.mark.parametrize("script, name", ALL_CONSTANTS)
def test_a_bad_value_of_every_constant_is_refused_naming_it(script, name, namespaces):
    namespace = dict(namespaces[script], **{name: BAD[name]})
    with pytest.raises(UserError) as error:
        configure(namespace, [])
    message = str(error.value)
    assert message.startswith(f"--{name.lower()}={BAD[name]!r}: ") and "\n" not in message
    assert "must be" in message


@pytest.mark.parametrize("arg", ["--epochs=2.5", "--epochs=x", "--resume=maybe"])
def test_conversion_errors_still_come_first(arg, namespaces):
    with pytest.raises(UserError, match=arg.split("=")[0]):
        configure(dict(namespaces["train_MCL_ResNet_1D_class2.py"]), [arg])


@pytest.mark.parametrize("script, argv, names", [
    ("train_MCL_ResNet_1D_class2.py", ["--test_size=0.5", "--val_size=0.5"],
     ["--test_size=0.5", "--val_size=0.5"]),
    ("train_MCL_ResNet_1D_class2.py", ["--cv_folds=2", "--val_size=0.5"],
     ["--val_size=0.5", "--cv_folds=2"]),
    ("train_MCL_ResNet_1D_class4.py", ["--class_names=a,b"], ["--class_names=('a', 'b')"]),
    ("train_MCL_ResNet_1D_class4.py", ["--threshold=youden"],
     ["--threshold=", "--num_classes=4", "argmax"]),
    ("prepare_data.py", ["--fs=100", "--bandpass=0.5,50"], ["--bandpass=(0.5, 50.0)", "--fs=100"]),
    ("demo_cohort.py", ["--r_peak_s=1.0"], ["--r_peak_s=1.0", "--window_s=1.0"]),
    ("Saliency_ana2_sys.py", ["--lead_importance=wave_effects", "--wave_effects=False"],
     ["--lead_importance='wave_effects'", "--wave_effects=False"]),
    ("train_MCL_ResNet_1D_class2.py", ["--freeze_epochs=2"],
     ["--freeze_epochs=2", "--init_from=''", "needs INIT_FROM"]),
    ("train_MCL_ResNet_1D_class4.py", ["--encoder_lr_factor=0.1"],
     ["--encoder_lr_factor=0.1", "--init_from=''", "needs INIT_FROM"]),
    ("train_MCL_ResNet_1D_class2.py", ["--init_from=a.pth", "--freeze_epochs=3", "--epochs=2"],
     ["--freeze_epochs=3", "--epochs=2", "cannot exceed EPOCHS"]),
])

def test_options_that_do_not_fit_together_are_refused(script, argv, names, namespaces):
    with pytest.raises(UserError) as error:
        configure(dict(namespaces[script]), argv)
    assert all(name in str(error.value) for name in names)


def test_experiment_lists_the_variants_and_the_reference_networks(namespaces):
    with pytest.raises(UserError) as error:
        configure(dict(namespaces["train_MCL_ResNet_1D_class2.py"]), ["--experiment=resnet50"])
    assert str(error.value) == ("--experiment='resnet50': must be one of baseline, ca, ms, "
                                "ca_ms, ca_ms_v2, resnet1d_wang, xresnet1d101, inception1d")


@pytest.mark.parametrize("script", ["train_MCL_ResNet_1D_class2.py",
                                    "train_MCL_ResNet_1D_class4.py"])
def test_normalisation_and_select_by_list_their_choices(namespaces, script):
    with pytest.raises(UserError) as error:
        configure(dict(namespaces[script]), ["--normalisation=zscore"])
    assert str(error.value) == ("--normalisation='zscore': must be one of per_lead, per_beat, "
                                "none")
    with pytest.raises(UserError) as error:
        configure(dict(namespaces[script]), ["--select_by=val_f1"])
    assert str(error.value) == "--select_by='val_f1': must be one of val_acc, val_auc, val_loss"


@pytest.mark.parametrize("value", ["sensitivity:1.5", "specificity:0", "0", "1", "1.2",
                                   "youdens", "sensitivity", "-0.3", "nan"])
def test_threshold_names_its_forms(namespaces, value):
    with pytest.raises(UserError) as error:
        configure(dict(namespaces["train_MCL_ResNet_1D_class2.py"]), [f"--threshold={value}"])
    assert str(error.value) == (f"--threshold={value!r}: must be youden, sensitivity:X or "
                                f"specificity:X (X in (0, 1]), a probability in (0, 1), or "
                                f"argmax")


@pytest.mark.parametrize("script", ["train_MCL_ResNet_1D_class2.py",
                                    "train_MCL_ResNet_1D_class4.py"])
@pytest.mark.parametrize("arg", ["--evaluate=" + A_FOLDER, "--allow_patient_overlap=True"])
def test_evaluation_options_on_a_training_script_name_the_new_command(namespaces, script, arg):
    with pytest.raises(UserError) as error:
        configure(dict(namespaces[script]), [arg, "--epochs=3"])
    if arg.startswith("--evaluate"):
        assert str(error.value) == (
            "--evaluate: scoring a finished run on another cohort is its own command now: "
            "python evaluate.py --train_dir=RUN --data_dir=OTHER (the training scripts only "
            "train)")
    else:
        assert str(error.value).startswith("unknown option --allow_patient_overlap")


def test_an_unannotated_constant_is_no_option():
    namespace = {"__file__": "script.py", "__annotations__": {"EPOCHS": valid.integer(1)},
                 "LEADS": ("V1",), "EPOCHS": 3}
    assert configure(namespace, []) == {"EPOCHS": 3}
    with pytest.raises(UserError, match="unknown option --leads"):
        configure(namespace, ["--leads=V2"])


def test_rules_agree_with_the_library():
    """The checks config.py repeats, because lvr.prepare.record_beats and record_tables are too
    slow to import for them."""
    from lvr.prepare import record_beats, record_tables
    for text in ["all", " Median ", "first:8", "RANDOM:2", "first:0", "first", "random:-1",
                 "last:3", "first:03", "all,median"]:
        try:
            record_beats.beat_selection(text)
            ok = True
        except UserError:
            ok = False
        assert valid.accepted(valid.BEATS, text) == ok, text
    for name in ["II", "ii", "lead II", "Lead_aVL", " v6 ", "V7", "", "lead"]:
        assert valid.accepted(valid.LEAD_NAME, name) == (lead_key(name) in LEAD_BY_KEY), name
    prepare_task = valid.PREPARE_TASK
    for task in ["mi_norm", "superclass4", "binary:A,B", "binary: A , B ,", "multiclass:A,B,C",
                 "binary:A", "binary:A,B,C", "multiclass:A", "regression", "binary:A,A"]:
        try:
            record_tables.task_labels(task)
            ok = True
        except UserError:
            ok = False
        if ok:   # task_labels checks the group names too: config may only let more through
            assert valid.accepted(prepare_task, task), task


def test_help_shows_the_allowed_values(capsys, namespaces):
    with pytest.raises(SystemExit):
        configure(dict(namespaces["Saliency_ana2_sys.py"]), ["--help"])
    out = capsys.readouterr().out
    assert "--max_figures=None" in out and "[None or an integer >= 0]" in out
    assert "--batch_size=32" in out and "[a positive integer]" in out


# ---------------------------------------------------------------- the scripts, as a user runs them

def run_script(script, *args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=HANG_LIMIT_S)


@pytest.mark.parametrize("script, arg", [
    ("train_MCL_ResNet_1D_class2.py", "--epochs=0"),
    ("train_MCL_ResNet_1D_class2.py", "--batch_size=0"),
    ("train_MCL_ResNet_1D_class4.py", "--lr=-0.1"),
    ("Saliency_ana2_sys.py", "--num_samples=0"),
    ("train_MCL_ResNet_1D_class2.py", "--label_smoothing=1.5"),
    ("train_MCL_ResNet_1D_class2.py", "--bootstrap=-5"),
    ("Saliency_ana2_sys.py", "--noise_level=-1"),
    ("Saliency_ana2_sys.py", "--max_figures=-3"),
    ("prepare_data.py", "--workers=0"),
    ("demo_cohort.py", "--lvr_wave=XYZ"),
    ("plot_training_curves.py", f"--train_dir={A_FILE}"),
])
def test_a_bad_option_is_one_error_line_before_any_work(script, arg, tmp_path):
    run = run_script(script, arg, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    option, value = arg.split("=", 1)
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}=") and value in lines[0]
    assert run.stdout == "" and os.listdir(tmp_path) == []


@pytest.mark.parametrize("script", ["train_MCL_ResNet_1D_class2.py", "Saliency_ana2_sys.py",
                                    "demo_cohort.py"])
def test_an_output_dir_that_is_a_file_is_refused(script, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    run = run_script(script, f"--output_dir={taken}", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [f"error: --output_dir={str(taken)!r}: must be a folder "
                                       f"path, not an existing file"]
    assert os.listdir(tmp_path) == ["taken.txt"] and taken.read_text() == "keep me"


def test_a_bad_option_answers_before_torch_loads():
    code = ("import runpy, sys\n"
            "from lvr.config import UserError, configure\n"
            "ns = runpy.run_path('train_MCL_ResNet_1D_class2.py', run_name='x')\n"
            "try:\n"
            "    configure(ns, ['--batch_size=0'])\n"
            "except UserError:\n"
            "    print('torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=HANG_LIMIT_S)
    assert run.stdout.strip() == "False", run.stderr



@pytest.mark.parametrize("argv", [["--init_from=a.pth", "--freeze_epochs=2", "--epochs=2"],
                                  ["--init_from=a.pth", "--encoder_lr_factor=0.1"],
                                  ["--init_from=a.pth", "--allow_pretraining_overlap=True"]])
def test_fine_tuning_options_are_accepted_with_init_from(namespaces, argv):
    configure(dict(namespaces["train_MCL_ResNet_1D_class2.py"]), argv)


@pytest.mark.parametrize("argv, case", [
    (["--allow_pretraining_overlap=True"], "without --init_from"),
    (["--test_size=0.2", "--cv_folds=5"], "unless --cv_folds=0")])
def test_fine_tuning_options_are_refused_where_they_act_on_nothing(namespaces, argv, case):
    with pytest.raises(UserError, match=f"has no effect {case}"):
        configure(dict(namespaces["train_MCL_ResNet_1D_class4.py"]), argv)
