"""Compare two runs' AUCs on the same test patients with DeLong's paired test.

Both runs must have scored the same beats (predictions.csv of a training run with the same data
and SEED, or of two --evaluate runs on one cohort), e.g. two EXPERIMENTs, or a model before and
after a change:

    python compare_runs.py --run_a=results_class2 --run_b=results_baseline

Patients are the cases by default: a patient's score is the mean of the patient's beat
probabilities, the rule every result of this project uses. Beats of one patient are not
independent, so --level=beat gives too small a p. Every constant below can be overridden as
--lower_case_name=value; --help lists them.
"""
import os

from lvr import options as valid
from lvr.config import UserError, configure, run_script
from lvr.stats.delong import delong_paired_test, p_text
from lvr.report.predictions import paired_scores, read_predictions, same_cohort_problem
from lvr.run_folder import write_json_atomic

# a finished run's folder (or its predictions.csv)
RUN_A: valid.TEXT = "results_class2"
# the run to compare it with
RUN_B: valid.TEXT = ""
# class scored one-vs-rest ("": the last class, the positive of 2)
POSITIVE_CLASS: valid.TEXT = ""
# patient (one case per patient) or beat
LEVEL: valid.LEVEL = "patient"
# 1 - confidence of the interval of the difference
ALPHA: valid.OPEN_FRACTION = 0.05
# also write the result to this JSON file ("": print only)
OUTPUT: valid.TEXT = ""
# pair runs of different cohorts whose beats match (one cohort, 2 gains)
ALLOW_OTHER_COHORT: valid.FLAG = False


def predictions_file(run):
    """The predictions.csv a --run_a / --run_b value names (a run folder or the file)."""
    return os.path.join(run, "predictions.csv") if os.path.isdir(run) else run


def same_run_problem(run_a, run_b):
    """The error line when both options name one predictions.csv (a difference of 0 by
    construction), or None."""
    a, b = predictions_file(run_a), predictions_file(run_b)
    if not os.path.samefile(a, b):
        return None
    return (f"--run_a={run_a} and --run_b={run_b} are the same predictions.csv "
            f"({os.path.realpath(a)}): a run compared with itself differs by 0 by construction; "
            f"give --run_b a second run")


def main():
    config = configure(globals())
    if not config["RUN_B"]:
        raise UserError("give the second run: --run_b=FOLDER (and --run_a=FOLDER)")
    a, b = read_predictions(config["RUN_A"]), read_predictions(config["RUN_B"])
    problem = same_run_problem(config["RUN_A"], config["RUN_B"])
    if problem:
        raise UserError(problem)
    problem = same_cohort_problem(config["RUN_A"], config["RUN_B"])
    if problem and problem[0] == "error" and not config["ALLOW_OTHER_COHORT"]:
        raise UserError(f"{problem[1]}; if both are versions of one cohort (the same recordings, "
                        f"e.g. at another gain), pass --allow_other_cohort=True")
    if problem:
        print(f"warning: {problem[1]}")
    y, score_a, score_b = paired_scores(a, b, config["POSITIVE_CLASS"], config["LEVEL"])
    if y.min() == y.max():
        raise UserError(f"the test set has only one class at --level={config['LEVEL']}; an AUC "
                        f"needs both")
    result = delong_paired_test(y, score_a, score_b, alpha=config["ALPHA"])
    result.update(run_a=config["RUN_A"], run_b=config["RUN_B"], level=config["LEVEL"],
                  cases=int(len(y)), method="DeLong et al. 1988, paired, two-sided")
    confidence = round(100 * (1 - config["ALPHA"]))
    print(f"{len(y)} {config['LEVEL']}s ({result['positives']} positive, "
          f"{result['negatives']} negative)")
    print(f"  AUC A {result['auc_a']:.4f}  ({config['RUN_A']})")
    print(f"  AUC B {result['auc_b']:.4f}  ({config['RUN_B']})")
    if result["p"] is None:
        print(f"  A - B {result['difference']:+.4f}; DeLong's test is {result['reason']}")
    else:
        low, high = result["ci"]
        print(f"  A - B {result['difference']:+.4f}, {confidence}% CI [{low:+.4f}, {high:+.4f}], "
              f"{p_text(result['p'])} (DeLong, paired)")
    if config["OUTPUT"]:
        write_json_atomic(config["OUTPUT"], result)
        print(f"  written to {config['OUTPUT']}")


if __name__ == "__main__":
    run_script(main)
