"""case review: corrections, exclusion, consensus figures, sign-off, the actor of an audit event

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("needs_review", sa.Boolean(), nullable=True))
    op.add_column("cases", sa.Column("review_reasons", sa.JSON(), nullable=True))
    op.add_column("cases", sa.Column("cells_analysed", sa.Integer(), nullable=True))
    op.add_column(
        "cases", sa.Column("review_status", sa.String(length=20), nullable=False, server_default="unreviewed")
    )
    op.add_column("cases", sa.Column("signed_by", sa.String(length=200), nullable=True))
    op.add_column("cases", sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_cases_needs_review"), "cases", ["needs_review"], unique=False)
    op.create_index(op.f("ix_cases_signed_at"), "cases", ["signed_at"], unique=False)
    op.add_column("images", sa.Column("excluded", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("images", sa.Column("reviewed_karyotype", sa.String(length=200), nullable=True))
    op.add_column("images", sa.Column("reviewed_karyogram_key", sa.String(length=400), nullable=True))
    op.add_column("images", sa.Column("reviewed_report_key", sa.String(length=400), nullable=True))
    op.add_column("images", sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("chromosomes", sa.Column("origin", sa.String(length=10), nullable=False, server_default="detected"))
    op.add_column("chromosomes", sa.Column("machine_label", sa.String(length=2), nullable=True))
    op.add_column("audit_events", sa.Column("actor", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as audit_events:
        audit_events.drop_column("actor")
    with op.batch_alter_table("chromosomes") as chromosomes:
        chromosomes.drop_column("machine_label")
        chromosomes.drop_column("origin")
    with op.batch_alter_table("images") as images:
        for column in ("revision", "reviewed_report_key", "reviewed_karyogram_key", "reviewed_karyotype", "excluded"):
            images.drop_column(column)
    op.drop_index(op.f("ix_cases_signed_at"), table_name="cases")
    op.drop_index(op.f("ix_cases_needs_review"), table_name="cases")
    with op.batch_alter_table("cases") as cases:
        for column in ("signed_at", "signed_by", "review_status", "cells_analysed", "review_reasons", "needs_review"):
            cases.drop_column(column)
