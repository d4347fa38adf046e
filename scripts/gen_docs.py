"""Write docs/cli.md from the live CLI (`make docs`)."""

from pathlib import Path

from memctl.cli.docgen import cli_markdown

root = Path(__file__).resolve().parent.parent
(root / "docs" / "cli.md").write_text(cli_markdown())
print("wrote docs/cli.md")
