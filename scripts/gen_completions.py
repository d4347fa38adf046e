"""Write completions/ from the live CLI (`make completions`)."""

from pathlib import Path

from memctl.cli.docgen import completions

root = Path(__file__).resolve().parent.parent
for name, text in completions().items():
    (root / "completions" / name).write_text(text)
    print(f"wrote completions/{name}")
