"""sweeps: a grid of arms over one base spec; jobs.sweep_id and jobs.sweep_arm (issue 13)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base", JSON, nullable=False, comment="The base JobSpec as submitted."),
        sa.Column("grid", JSON, nullable=False, comment="{dotted path: [values]}"),
        sa.Column("sampling", JSON, nullable=False, comment="{type: grid} or {type: random, n_arms, seed}"),
        sa.Column("selection", JSON, nullable=False, comment="{metric: dotted path into a report, mode: max|min}"),
        sa.Column("control", sa.Boolean(), nullable=False),
        sa.Column("arms", JSON, nullable=False, comment="The planned arms in order: [{label, overrides, control}]."),
        sa.Column("status", sa.String(length=16), nullable=False, comment="running until finished_at is set."),
        sa.Column("best_job_id", sa.String(length=40), nullable=True),
        sa.Column("result", JSON, nullable=True, comment="Metric values, best arm, lift, gates."),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweeps") as batch:
        batch.create_index("ix_sweeps_tenant_created", ["tenant_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("jobs") as batch:  # batch mode: SQLite rebuilds the table
        batch.add_column(
            sa.Column("sweep_id", sa.String(length=40), nullable=True, comment="The sweep this job is an arm of.")
        )
        batch.add_column(
            sa.Column("sweep_arm", sa.String(length=1000), nullable=True, comment="The arm's label in its sweep.")
        )
        batch.create_foreign_key("fk_jobs_sweep_id", "sweeps", ["sweep_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_jobs_sweep", ["sweep_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_sweep")
        batch.drop_constraint("fk_jobs_sweep_id", type_="foreignkey")
        batch.drop_column("sweep_arm")
        batch.drop_column("sweep_id")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_index("ix_sweeps_tenant_created")
    op.drop_table("sweeps")
