"""mmfs_loader must import and work where Dagster cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_loader_imports_without_dagster():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "dagster" or name.startswith("dagster."):
                    raise ImportError("dagster is blocked in this test")
        sys.meta_path.insert(0, Block())
        import mmfs_loader, mmfs_loader.contract.query, mmfs_loader.contract.status, mmfs_loader.contract.sql, mmfs_loader.contract.table
        from mmfs_loader import FeatureDataset, FeatureDataLoader, ClipSpec, collate
        import mmfs_loader.dataset, mmfs_loader.dataloader, mmfs_loader.reads.fetch, mmfs_loader.decode.video
        assert not any(m == "dagster" or m.startswith("dagster.") for m in sys.modules)
        try:
            import dagster
        except ImportError:
            print("blocked-ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "blocked-ok" in out.stdout


def test_import_mmfs_loader_and_its_contract_stay_light():
    """``import mmfs_loader`` (and the table contract the CLI and the code location use) loads no torch:
    the training-side names load it on first use."""
    code = textwrap.dedent(
        """
        import sys
        import mmfs_loader
        import mmfs_loader.contract.depth, mmfs_loader.contract.health, mmfs_loader.contract.leases
        import mmfs_loader.contract.query, mmfs_loader.contract.status, mmfs_loader.contract.sql
        assert "torch" not in sys.modules, "import mmfs_loader loaded torch"
        mmfs_loader.FeatureDataset
        assert "torch" in sys.modules
        print("light-ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "light-ok" in out.stdout


def test_the_parts_of_mmfs_loader_import_one_way():
    """contract <- decode <- reads <- the front (dataset, dataloader, options, recipe), and dataset ->
    dataloader, never the reverse: no module of a part imports a later part, at any level."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "mmfs_loader"
    rank = {"contract": 0, "decode": 1, "reads": 2}
    front = 3

    def part(module: str) -> int:
        sub = module.split(".")[1] if module.count(".") else ""
        return rank.get(sub, front)

    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        if name == "mmfs_loader":
            continue  # the package's front door names everything (lazily)
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmfs_loader"):
                targets = [node.module] if node.module != "mmfs_loader" else [f"mmfs_loader.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mmfs_loader")]
            for t in targets:
                assert part(t) <= part(name), f"{name} imports {t}: a later part"
                assert not (name == "mmfs_loader.dataloader" and t == "mmfs_loader.dataset"), "dataloader imports dataset"
