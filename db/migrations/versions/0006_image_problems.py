"""why an image could not be used

Revision ID: 0006
Revises: 0005

An image the model cannot look at (a 1 x 100000 strip, an unreadable media file) is skipped by proposal runs,
workers, assist, fine-tunes and evaluations instead of stopping them; the reason and when it was found are
kept on the image (shown in the Dataset tab and by ``app.py stats``) and cleared when the image is used
successfully again.
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('problem', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('problem_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('problem_at')
        batch_op.drop_column('problem')
