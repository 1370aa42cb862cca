"""What each verb did: the objects ``pack``, ``verify``, ``unpack`` and ``import_documents`` return."""
from __future__ import annotations

from dataclasses import dataclass, field


def size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


@dataclass
class PackReport:
    """What ``pack`` did (or, with ``dry_run``, would do)."""
    dest: str
    runs: list[str] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)
    files_copied: int = 0
    files_reused: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "would pack" if self.dry_run else "packed"
        rate = self.bytes_copied / self.seconds / 1e6 if self.seconds and not self.dry_run else 0
        s = (f"{verb} {len(self.runs)} run(s) ({len(self.new_runs)} new) into {self.dest}: "
             f"{size_text(self.bytes_total)} in all, {self.files_copied} file(s) copied "
             f"({size_text(self.bytes_copied)}{f', {rate:.0f} MB/s' if rate else ''}), "
             f"{self.files_reused} already there")
        if self.cleaned:
            s += f"; removed {len(self.cleaned)} partial file(s) of an interrupted pack"
        return s + "".join(f"\n  conflict (kept the packed one): {c}" for c in self.conflicts)


@dataclass
class VerifyReport:
    """The result of checking a pack against its manifest; true when the pack is intact."""
    dest: str
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    n_files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra or self.unsafe)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"{self.dest}: OK, {self.n_files} file(s) match the manifest"
        lines = [f"{self.dest}: NOT OK"]
        for label, items in (("missing", self.missing), ("changed", self.changed),
                             ("extra", self.extra), ("unsafe path", self.unsafe)):
            lines += [f"  {label}: {p}" for p in items]
        if any(".partial-" in p for p in self.extra):
            lines.append("  (partial files: a pack was interrupted; run the same pack again to finish it)")
        return "\n".join(lines)


@dataclass
class UnpackReport:
    """What ``unpack`` or ``import_documents`` installed.

    ``conflicts`` are ``"<uid>: why"`` texts (or a file path for external files): a run
    already there under that uid with other documents, kept as it was.
    ``failed`` (import only) maps each source that could not be imported to the reason.
    """
    name: str | None
    directory: str
    added: list[str] = field(default_factory=list)
    skipped_identical: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        s = (f"{self.directory}: {len(self.added)} run(s) added, {len(self.skipped_identical)} "
             f"identical skipped, {len(self.conflicts)} conflict(s)")
        if self.failed:
            s += f", {len(self.failed)} failed"
        if self.name:
            s += f"; catalog {self.name!r}"
        s += "".join(f"\n  conflict (kept the existing one): {c}" for c in self.conflicts)
        return s + "".join(f"\n  failed: {v}" for v in self.failed.values())  # each names its file
