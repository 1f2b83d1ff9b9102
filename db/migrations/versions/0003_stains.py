"""stains: a case's banding as given (q, g, auto), each image's as analysed

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:59:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # cases analysed before stains existed were all Q-band fluorescence
    op.add_column("cases", sa.Column("stain", sa.String(length=4), nullable=False, server_default="q"))
    op.add_column("images", sa.Column("stain", sa.String(length=1), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as images:
        images.drop_column("stain")
    with op.batch_alter_table("cases") as cases:
        cases.drop_column("stain")
