"""The SQLite implementation of the store's interfaces (the default, in the state
directory: ``history.sqlite3``). The only code here that imports ``sqlite3`` or writes
SQL; a PostgreSQL implementation sits beside it."""

from .database import SCHEMA_VERSION, Database
from .history import History
from .releases import ReleaseStore

__all__ = ["SCHEMA_VERSION", "Database", "History", "ReleaseStore"]
