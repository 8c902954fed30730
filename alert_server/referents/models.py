"""Tables of the referents package (prefix ``referent_``).

The referent directory is stored whole, as the YAML text that was imported: every server reads
the same directory, and the newest row wins. Keeping the text (not a parsed copy) means the
stored directory is always re-checked by the same parser that accepted it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class ReferentDirectory(SQLModel, table=True):
    __tablename__ = "referent_directory"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=500)  # the file it was imported from
    sha256: str = Field(max_length=64)  # of the YAML text
    yaml_text: str = Field(sa_type=sa.Text)
    loaded_at: datetime
