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
        import mmfs_loader, mmfs_loader.query, mmfs_loader.status, mmfs_loader.sql, mmfs_loader.table
        from mmfs_loader import FeatureDataset, ResumableLoader, ClipSpec, collate
        import mmfs_loader.dataset, mmfs_loader.dataloader, mmfs_loader.fetch, mmfs_loader.video
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
