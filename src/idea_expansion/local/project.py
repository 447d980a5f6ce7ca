"""Locate the Supabase project directory (config.toml, migrations/, seed.sql)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import ConfigurationError

__all__ = ["MigrationFile", "SupabaseProject", "find_project"]


@dataclass(frozen=True)
class MigrationFile:
    """One file of supabase/migrations, named `<version>_<name>.sql` as the Supabase CLI expects."""

    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class SupabaseProject:
    """A Supabase CLI project directory (the folder holding config.toml)."""

    root: Path

    @property
    def migrations_dir(self) -> Path:
        return self.root / "migrations"

    @property
    def seed_path(self) -> Path:
        return self.root / "seed.sql"

    def migrations(self) -> list[MigrationFile]:
        """The migration files in version order, as the Supabase CLI would apply them."""
        files: list[MigrationFile] = []
        for path in sorted(self.migrations_dir.glob("*.sql")):
            version, sep, name = path.stem.partition("_")
            if not (sep and version.isdigit()):
                raise ConfigurationError(
                    f"migration file {path.name} is not named <timestamp>_<name>.sql; the Supabase CLI would skip it"
                )
            files.append(MigrationFile(version=version, name=name, path=path))
        return files


def find_project(explicit: str | os.PathLike[str] | None = None) -> SupabaseProject:
    """Find the project: an explicit directory, else `supabase/` in the working directory or a parent,
    else the copy shipped inside the package (installed wheels), else the source checkout's."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    else:
        cwd = Path.cwd().resolve()
        candidates.extend(parent / "supabase" for parent in (cwd, *cwd.parents))
        package_dir = Path(__file__).resolve().parent.parent
        candidates.append(package_dir / "_supabase")
        candidates.extend(parent / "supabase" for parent in package_dir.parents)
    for candidate in candidates:
        if (candidate / "migrations").is_dir():
            return SupabaseProject(candidate.resolve())
    where = str(explicit) if explicit is not None else "the working directory, its parents or the package"
    raise ConfigurationError(f"no Supabase project (a folder with migrations/) found in {where}")
