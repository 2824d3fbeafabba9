"""`drmm reproduce`: the paper's Tables 1-4 (sections 5.1-5.3), one command each.

tables.py: the tables and the schedules; plan.py: planning and running the runs; report.py:
table.md and table.csv; cli.py: the command line.
"""

from drmm.reproduce.cli import register
from drmm.reproduce.plan import reproduce
from drmm.reproduce.tables import SCHEDULES, TABLES

__all__ = ["SCHEDULES", "TABLES", "register", "reproduce"]
