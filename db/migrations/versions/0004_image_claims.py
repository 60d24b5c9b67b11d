"""image claims for proposal workers

Revision ID: 0004
Revises: 0003

Several ``app.py propose --worker`` processes (on one machine or many, on one PostgreSQL store) claim images
through the database: who holds an image until when, and which model version last proposed on it, so an image
is proposed once per model version and a dead worker's claim expires.
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proposed_version_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('proposed_version_id')
