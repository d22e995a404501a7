"""jobs.control_job_id / jobs.control_of: a job and its control arm (evaluation.control)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 05:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain nullable columns (no foreign key): SQLite adds them in place, without rebuilding the jobs table; a pair
    # belongs to one tenant, and deleting the tenant deletes both.
    op.add_column(
        "jobs",
        sa.Column("control_job_id", sa.String(length=40), nullable=True, comment="This job's control arm."),
    )
    op.add_column(
        "jobs",
        sa.Column("control_of", sa.String(length=40), nullable=True, comment="The job this one is the control arm of."),
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("control_of")
        batch.drop_column("control_job_id")
