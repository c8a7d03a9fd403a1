"""What a verification found: sizes, the problems, and the first bad entry or checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    size: int = 0
    checkpoints: int = 0
    pruned: int = 0
    first_bad: int | None = None
    first_bad_checkpoint: int | None = None
    """The size of the first checkpoint row found altered, where no entry is to blame."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, entry: int | None = None, checkpoint: int | None = None) -> None:
        self.problems.append(message)
        if entry is not None and (self.first_bad is None or entry < self.first_bad):
            self.first_bad = entry
        if checkpoint is not None and (
            self.first_bad_checkpoint is None or checkpoint < self.first_bad_checkpoint
        ):
            self.first_bad_checkpoint = checkpoint

    def summary(self) -> str:
        if self.ok:
            pruned = f" ({self.pruned} pruned past retention)" if self.pruned else ""
            signed = f"{self.checkpoints} signed checkpoint(s)"
            return f"OK: {self.size} entries{pruned}, {signed} verified"
        if self.first_bad is not None:
            where = f"; first bad entry: {self.first_bad}"
        elif self.first_bad_checkpoint is not None:
            where = f"; first bad checkpoint: size {self.first_bad_checkpoint}"
        else:
            where = ""
        return f"FAILED{where}: {self.problems[0]}"
