"""The layout of the repository: imports run one way, the metric is light, names users reach still resolve."""
import ast
import pickle
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_DOORS = {"experiment", "analysis", "feature_map", "distance", "hubconf", "bench"}
HEAVY = {"pytorch_lightning", "lightning", "matplotlib", "requests", "urllib3", "scipy", "skimage", "wandb"}


def imports(path):
    """Every module name `path` imports, at the top or inside functions (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_graph(root=ROOT):
    """{top-level module: the top-level modules it imports}."""
    modules = {path.stem: path for path in root.glob("*.py")}
    return {name: imports(path) & set(modules) - {name} for name, path in modules.items()}


def cycles(graph):
    """The import cycles of `graph`, each as a list of modules (first repeated last)."""
    found = []

    def walk(node, path):
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest module
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def layout_problems(root=ROOT):
    """What breaks the one-way imports of the layout (empty when nothing does)."""
    graph, problems = import_graph(root), []
    problems += [" -> ".join(cycle) + " is an import circle" for cycle in cycles(graph)]
    for module, deps in sorted(graph.items()):
        if module != "bench":
            problems += [f"{module} imports the front door {door}" for door in sorted(deps & FRONT_DOORS)]
    if "metric" not in graph:
        problems.append("there is no metric.py")
    else:
        reached, todo = set(), ["metric"]
        while todo:  # everything metric.py pulls in, through the project's own modules
            module = todo.pop()
            reached.add(module)
            todo += [dep for dep in graph[module] if dep not in reached]
        heavy = {dep for module in reached for dep in imports(root / f"{module}.py")} & HEAVY
        problems += [f"metric.py pulls in {', '.join(sorted(heavy))}"] if heavy else []
        problems += [f"metric.py pulls in {', '.join(sorted(reached - {'metric', 'loss_networks'}))}"
                     ] if reached - {"metric", "loss_networks"} else []
    problems += [f"{path.stem} imports from tests/" for path in sorted(root.glob("*.py")) if "tests" in imports(path)]
    if graph.get("hubconf", set()) - {"metric"}:
        problems.append(f"hubconf imports {', '.join(sorted(graph['hubconf']))}, not the metric alone")
    return problems


def test_imports_run_one_way():
    assert layout_problems() == []


def test_the_check_finds_circles_front_doors_and_a_heavy_metric(tmp_path):
    files = {"metric.py": "import scipy\nfrom results import x\n", "results.py": "def f():\n    import metric\n",
             "analysis.py": "import distance\n", "distance.py": "", "hubconf.py": "import metric, results\n",
             "bench.py": "from tests.helpers import x\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    problems = "\n".join(layout_problems(tmp_path))
    assert "metric -> results -> metric is an import circle" in problems
    assert "analysis imports the front door distance" in problems
    assert "metric.py pulls in scipy" in problems and "metric.py pulls in results" in problems
    assert "hubconf imports metric, results, not the metric alone" in problems
    assert "bench imports from tests/" in problems


def test_importing_the_metric_or_hubconf_loads_no_heavy_package():
    code = ("import sys, metric, hubconf; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
            f"set({sorted(HEAVY)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_no_top_level_file_outgrows_one_afternoon_of_reading():
    lengths = {path.name: len(path.read_text().splitlines()) for path in ROOT.glob("*.py")}
    assert max(lengths.values()) <= 650, lengths
    assert lengths["experiment.py"] <= 600


@pytest.mark.parametrize("name", ["DistanceMetric", "METHODS", "score_2afc", "score_jnd", "ALL_CONFIGS", "PARTS",
                                  "results_table", "LPIPSTraining", "RankingHead", "train_version"])
def test_names_users_reach_through_experiment_still_resolve(name):
    import experiment
    import metric
    import results
    import training
    assert getattr(experiment, name) is getattr(next(m for m in (metric, results, training) if hasattr(m, name)), name)


def test_a_metric_pickled_under_the_old_module_name_still_loads(torch_home):
    import torch

    from metric import DistanceMetric
    saved = DistanceMetric("alex", method="sort", channel_norm=False)
    data = pickle.dumps(saved)
    # as pickled before the metric moved: DistanceMetric named as experiment's
    old = data.replace(b"\x8c\x06metric\x94\x8c\x0eDistanceMetric", b"\x8c\nexperiment\x94\x8c\x0eDistanceMetric")
    assert old != data
    loaded = pickle.loads(old)
    x0, x1 = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    assert torch.equal(loaded(x0, x1), saved(x0, x1))


def test_the_hand_run_study_runs_as_a_module(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["collapse_study", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("tests.collapse_study", run_name="__main__")  # as python -m tests.collapse_study
    assert exit_info.value.code == 0 and "--seeds" in capsys.readouterr().out
