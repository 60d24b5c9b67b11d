"""users with roles, and reviewers' verdicts

Revision ID: 0005
Revises: 0004

Accounts for the login (``app.py user add NAME --role ROLE``): a role (labeler, reviewer, admin) and a
password hashed with scrypt. Reviewers approve an image's labels or send them back with a note; each verdict
names the image's row version it was given on, so a later save makes the image wait for review again.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('password_hash', sa.String(length=300), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'verdicts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', IdType, nullable=False),
        sa.Column('row_version', sa.Integer(), nullable=False),
        sa.Column('verdict', sa.String(length=20), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('user', sa.String(length=200), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_verdicts_image_id', 'verdicts', ['image_id'])


def downgrade() -> None:
    op.drop_index('ix_verdicts_image_id', table_name='verdicts')
    op.drop_table('verdicts')
    op.drop_table('users')
