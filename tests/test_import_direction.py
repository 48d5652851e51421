"""The import direction of the design card: decoder/ never imports encoder/; common/ (the tools'
folders common/tools/<tool>/ included) imports neither encoder/, decoder/ nor ctc/; token-wise
decoding never loads torch; no two modules of the project import each other (at the top or
inside a function)."""

import ast
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO, three_tensors, token_matrix


def imported_modules(path):
    """Top-level names of every module a file imports (absolute and relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:                              # relative: resolve against the package
                package = path.relative_to(REPO).parts[:-1]
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ((node.module,) if node.module else ()))
                names.add(module)
                if not node.module:
                    names |= {".".join(base + (alias.name,)) for alias in node.names}
            else:
                names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


def project_imports(path):
    """Dotted names of the project modules a file imports (``from a.b import c`` gives a.b and,
    when a/b/c.py exists, a.b.c), wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if module_file(name) is not None}


def module_file(name):
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_two_modules_import_each_other():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts): p
               for folder in ("common", "decoder", "encoder", "ctc") for p in python_files(folder)
               if p.name != "__init__.py"}
    imports = {name: project_imports(path) - {name} for name, path in modules.items()}
    circles = sorted({tuple(sorted((a, b))) for a, targets in imports.items() for b in targets
                      if a in imports.get(b, ())})
    assert not circles


def python_files(folder):
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, folder
    return files


@pytest.mark.parametrize("folder,forbidden", [("decoder", {"encoder", "ctc", "torch"}),
                                              ("common", {"encoder", "decoder", "ctc"})])
def test_static_import_direction(folder, forbidden):
    offenders = {str(p.relative_to(REPO)): sorted(imported_modules(p) & forbidden) for p in python_files(folder)}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_checker_sees_imports(tmp_path):
    sample = REPO / "decoder" / "__init__.py"
    assert imported_modules(sample) <= {"common", "__future__"}
    probe = tmp_path / "probe.py"
    probe.write_text("import encoder.app\nfrom encoder import cfg\nimport importlib\n"
                     "importlib.import_module('torch')\n")
    assert {"encoder", "torch", "importlib"} <= imported_modules(probe)


DECODE_SCRIPT = textwrap.dedent("""
    import sys
    import decoder.decoder
    from decoder import app
    data = open(sys.argv[1], "rb").read()
    decoded = decoder.decoder.decode_stream(data, threads=2)
    assert all(check.ok for check in decoded.hash_checks) and decoded.hash_checks
    assert app.main(["-i", sys.argv[1], "-o", sys.argv[2]]) == 0
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "encoder", "ctc"))
    print("HEAVY:", ",".join(heavy))
""")


@pytest.mark.parametrize("tensors", [token_matrix, three_tensors], ids=["tokens", "three"])
def test_tokenwise_decoding_loads_neither_torch_nor_the_encoder(tmp_path, tensors):
    from encoder.encoder import encode_features
    from tests.helpers import options
    stream = tmp_path / "s.bin"
    stream.write_bytes(encode_features(tensors(), options()).stream)
    proc = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(stream), str(tmp_path / "out.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY: \n" in proc.stdout, proc.stdout


def test_common_imports_without_the_other_packages():
    script = ("import sys, pkgutil, importlib, common\n"
              "for m in pkgutil.walk_packages(common.__path__, 'common.'):\n"
              "    if m.name != 'common.specdoc': importlib.import_module(m.name)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('encoder', 'decoder', 'ctc', 'torch')))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
